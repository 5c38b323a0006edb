"""The component base: one loop, one heartbeat, one status cadence, every status on one bus."""

from __future__ import annotations

import threading
import time

import pytest
import zmq
from conftest import wait_for

from sightd.backoff import Backoff, Cooldown
from sightd.component import Component
from sightd.config import load_config
from sightd.daemon.forwarder import StatusForwarder, foreground_status_bus
from sightd.process import Runtime
from sightd.protocol import unpack_message
from sightd.status import format_status
from sightd.transport import connect_subscriber


class Counting(Component):
    """Counts its cycles; fails over to "reconnecting" with a reason when told to."""

    def __init__(self, transport, runtime):
        super().__init__("counting", transport, runtime)
        self.cycles = 0
        self.closed = False

    def cycle(self, wait: float) -> None:
        self.cycles += 1
        self.runtime.stop.wait(wait)

    def figures(self) -> dict:
        return {"cycles": self.cycles}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def bus(config_file):
    """A status bus as the supervisor hosts it, and a reader on its output."""
    transport = load_config(config_file(transport={"status_interval": 0.2})).transport
    forwarder = StatusForwarder(transport)
    forwarder.start()
    reader = connect_subscriber([transport.status], [b"status."], transport)
    yield transport, reader
    reader.close()
    forwarder.stop()


def read_status(reader, predicate, timeout=10.0) -> dict:
    def found():
        while reader.poll(100):
            _, _, body = unpack_message(reader.recv_multipart(zmq.NOBLOCK))
            if predicate(body):
                return body
        return None

    return wait_for(found, timeout, "a status message matching the test")


def test_status_comes_at_its_cadence_says_why_when_not_online_and_ends_offline(bus):
    transport, reader = bus
    beats = []
    runtime = Runtime("counting", beat=lambda: beats.append(time.monotonic()))
    component = Counting(transport, runtime)
    thread = threading.Thread(target=component.run)
    thread.start()
    try:
        first = read_status(reader, lambda b: b["component"] == "counting")
        assert first["state"] == "starting" and "cycles" in first
        component.set_state("reconnecting", "cannot open rtsp://cam/stream")
        failing = read_status(reader, lambda b: b["state"] == "reconnecting")
        assert failing["reason"] == "cannot open rtsp://cam/stream"
        component.set_state("online", "ignored: online needs no reason")
        online = read_status(reader, lambda b: b["state"] == "online")
        assert "reason" not in online
        later = read_status(reader, lambda b: b["at"] > online["at"] + 0.5)
        assert later["cycles"] > online["cycles"]  # the loop kept cycling between reports
    finally:
        runtime.stop.set()
        thread.join(5)
    assert not thread.is_alive() and component.closed
    read_status(reader, lambda b: b["state"] == "offline")
    # The heartbeat came at least every cycle (each cycle waits at most 0.5 s).
    assert len(beats) >= 3 and max(b - a for a, b in zip(beats, beats[1:], strict=False)) < 1.5


def test_a_failing_cycle_still_closes_and_reports_offline(bus):
    transport, reader = bus

    class Broken(Counting):
        def cycle(self, wait):
            super().cycle(wait)
            if self.cycles == 3:  # a while after the start: status is best effort, and a
                raise RuntimeError("bug")  # PUB connection takes a moment to set up

    component = Broken(transport, Runtime("counting"))
    with pytest.raises(RuntimeError):
        component.run()
    assert component.closed
    read_status(reader, lambda b: b["state"] == "offline")


def test_a_part_run_alone_hosts_the_status_bus_unless_someone_else_does(config_file):
    transport = load_config(config_file(transport={"status_interval": 0.2})).transport
    reader = connect_subscriber([transport.status], [b"status."], transport)
    try:
        with foreground_status_bus(transport):  # nobody hosts it: this one does
            with foreground_status_bus(transport):  # taken: the second uses the first's
                runtime = Runtime("counting")
                component = Counting(transport, runtime)
                threading.Timer(1.0, runtime.stop.set).start()
                component.run()
            assert read_status(reader, lambda b: b["component"] == "counting")
    finally:
        reader.close()


def test_status_table_shows_the_reason_and_no_none():
    latest = {
        "capture:door": {"state": "reconnecting", "reason": "cannot open rtsp://cam/door"},
        "infer": {"state": "online", "fps": 2.0, "labels": {"door": None}},
    }
    text = "\n".join(format_status(latest))
    assert "reconnecting: cannot open rtsp://cam/door" in text
    assert "None" not in text and "0 ms" not in text


def test_backoff_doubles_to_its_ceiling_and_resets_on_success():
    backoff = Backoff(0.5, 3.0)
    assert [backoff.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert 2.5 < backoff.remaining() <= 3.0
    backoff.succeeded()
    assert backoff.failed() == 0.5
    assert Backoff(0.5, 3.0).delays(4) == [0.5, 1.0, 2.0, 3.0]


def test_cooldown_lets_each_key_through_once_per_period():
    cooldown = Cooldown(0.3)
    assert cooldown.ready("open") and not cooldown.ready("open") and cooldown.ready("shut")
    time.sleep(0.35)
    assert cooldown.ready("open")
