"""Subscriber isolation and the print and log built-ins, each in a real `sightd subscribe`
process fed by real ZeroMQ messages; a third-party plugin comes in through its entry point."""

from __future__ import annotations

import json
import re
import signal
import sys

import pytest
from conftest import free_port, wait_for
from subscriber_harness import (
    Bus,
    Subscribers,
    complete_lines,
    plugin_pythonpath,
    read_jsonl,
)

from sightd.subscribers.registry import BUILTINS, subscriber_class


@pytest.fixture
def subscribers(tmp_path):
    started = Subscribers(tmp_path)
    yield started
    started.close()


def labels_in(path):
    return [message["label"] for message in read_jsonl(path)]


def test_print_writes_one_readable_line_per_message(config_file, subscribers):
    # given a print subscriber for labels and events
    path = config_file(subscribers=[{"type": "print", "topics": ["label", "event"]}])
    with Bus(path) as bus:
        process = subscribers.start(path, "print")
        bus.wait_subscriptions(2)
        # when a label and an event arrive
        bus.label("thumbs_up", confidence=0.97, captured_at=1_700_000_000.0)
        bus.event("fist", previous="thumbs_up", confidence=0.88)
        # then each is one line: time, camera, label, confidence
        wait_for(lambda: complete_lines(process.out_path)[1:], what="two lines")
        first, second = complete_lines(process.out_path)
        assert re.fullmatch(r"\d\d:\d\d:\d\d cam0 thumbs_up 0\.97", first)
        assert re.fullmatch(r"\d\d:\d\d:\d\d cam0 fist 0\.88 \(was thumbs_up\)", second)
        status = bus.status_of("subscriber:print", lambda body: body["delivered"] == 2)
        assert status["state"] == "online" and status["errors"] == 0
        assert subscribers.stop(process) == 0


def test_a_plugin_installed_through_its_entry_point_runs_from_the_config(
    config_file, subscribers, tmp_path
):
    # given the test package pip-installed, and configured with filters like a built-in
    out = tmp_path / "recorded.jsonl"
    entry = {"type": "recorder", "path": str(out), "cameras": ["cam0"], "min_confidence": 0.6}
    path = config_file(subscribers=[entry])
    with Bus(path) as bus:
        process = subscribers.start(path, "recorder", env=plugin_pythonpath())
        bus.wait_subscriptions(2)
        # when messages for other cameras, low confidence and the right ones arrive
        bus.label("a", camera="cam0", confidence=0.9)
        bus.label("b", camera="cam1", confidence=0.9)
        bus.label("c", camera="cam0", confidence=0.3)
        bus.event("d", camera="cam0", confidence=0.95)
        # then the plugin handled exactly the ones it asked for
        wait_for(lambda: len(labels_in(out)) >= 2, what="two recorded messages")
        bus.status_of("subscriber:recorder", lambda body: body["received"] == 3)
        assert labels_in(out) == ["a", "d"]
        assert [m["kind"] for m in read_jsonl(out)] == ["label", "event"]
        assert subscribers.stop(process) == 0


def test_a_raising_and_a_hanging_subscriber_leave_the_others_delivering(
    config_file, subscribers, tmp_path
):
    # given three plugin subscribers: a healthy one, one that raises, one that hangs
    outs = [tmp_path / f"r{i}.jsonl" for i in range(3)]
    entries = [
        {"type": "recorder", "path": str(outs[0])},
        {"type": "recorder", "path": str(outs[1]), "fail_on": "boom"},
        {"type": "recorder", "path": str(outs[2]), "hang_on": "hang", "handler_timeout": 1.0},
    ]
    path = config_file(subscribers=entries)
    env = plugin_pythonpath()
    with Bus(path) as bus:
        healthy, failing, hanging = (
            subscribers.start(path, f"recorder.{i}", env=env) for i in range(3)
        )
        bus.wait_subscriptions(6)
        # when a message makes one raise and another hang, and more follow
        for label in ["a", "boom", "hang", "b"]:
            bus.label(label)
        # then the hung one exits non-zero (to be restarted) and says why
        assert hanging.wait(10) == 3
        assert "handle() has run for more than 1 s" in hanging.err_path.read_text()
        assert labels_in(outs[2]) == ["a", "boom"]
        # and the others keep delivering, the raising one having counted its error
        bus.label("c")
        wait_for(lambda: labels_in(outs[0]) == ["a", "boom", "hang", "b", "c"], what="healthy")
        wait_for(lambda: labels_in(outs[1]) == ["a", "hang", "b", "c"], what="failing")
        status = bus.status_of("subscriber:recorder.1", lambda body: body["delivered"] == 4)
        assert status["errors"] == 1 and status["state"] == "online"
        assert "recorder was told to fail on boom" in failing.err_path.read_text()
        assert subscribers.stop(healthy) == 0 and subscribers.stop(failing) == 0


def test_a_slow_subscriber_drops_its_oldest_messages_and_counts_them(
    config_file, subscribers, tmp_path
):
    # given a plugin that takes 0.2 s per message and may queue 3
    out = tmp_path / "slow.jsonl"
    entry = {"type": "recorder", "path": str(out), "delay": 0.2, "queue_size": 3}
    path = config_file(subscribers=[entry])
    with Bus(path) as bus:
        process = subscribers.start(path, "recorder", env=plugin_pythonpath())
        bus.wait_subscriptions(2)
        # when 40 labels arrive at once
        for i in range(40):
            bus.label(f"l{i}")
        # then all are received, the newest are handled and the rest are counted as dropped
        status = bus.status_of(
            "subscriber:recorder", lambda body: body["delivered"] + body["dropped"] == 40
        )
        handled = labels_in(out)
        assert handled[-1] == "l39"
        assert status["dropped"] == 40 - len(handled) >= 30
        assert subscribers.stop(process) == 0


def test_log_rotates_by_size_and_every_line_is_complete(config_file, subscribers, tmp_path):
    # given a log subscriber rotating at 2 KiB and keeping 20 old files
    log = tmp_path / "logs" / "labels.jsonl"
    entry = {"type": "log", "path": str(log), "max_bytes": 2048, "backups": 20}
    path = config_file(subscribers=[entry])
    with Bus(path) as bus:
        process = subscribers.start(path, "log")
        bus.wait_subscriptions(2)
        # when 60 labels arrive
        for i in range(60):
            bus.label(f"label{i}")

        def logged():
            files = sorted(log.parent.glob("labels.jsonl*"), reverse=True)
            return [m for f in files for m in read_jsonl(f)]  # oldest file first

        # then all of them are in the files, in order, none over the size limit
        wait_for(lambda: len(logged()) == 60, what="60 logged lines")
        assert [m["label"] for m in logged()] == [f"label{i}" for i in range(60)]
        assert all(f.stat().st_size <= 2048 for f in log.parent.iterdir())
        assert (log.parent / "labels.jsonl.3").exists()
        assert subscribers.stop(process) == 0


def test_log_cuts_a_torn_line_and_survives_sigkill(config_file, subscribers, tmp_path):
    # given a log whose last line was torn by a power cut
    log = tmp_path / "labels.jsonl"
    log.write_text('{"kind":"label","label":"old"}\n{"kind":"label","lab')
    path = config_file(subscribers=[{"type": "log", "path": str(log)}])
    with Bus(path) as bus:
        process = subscribers.start(path, "log")
        bus.wait_subscriptions(2)
        # when it restarts, logs, and is killed with SIGKILL in the middle of a burst
        for i in range(50):
            bus.label(f"new{i}")
        wait_for(lambda: "new49" in log.read_text(), what="the first 50 lines")
        for i in range(50, 300):
            bus.label(f"new{i}")
        process.send_signal(signal.SIGKILL)
        process.wait(5)
        # then the torn line is gone and every line in the file is complete JSON
        lines = log.read_text().splitlines()
        assert log.read_text().endswith("\n")
        labels = [json.loads(line)["label"] for line in lines]
        assert labels[:51] == ["old"] + [f"new{i}" for i in range(50)]
        assert "removed 20 bytes of a half-written line" in process.err_path.read_text()


def quiet_options(kind: str, folder) -> dict:
    """Options that let each built-in start here with no outside service."""
    options = {
        "print": {},
        "log": {"path": str(folder / "labels.jsonl")},
        "command": {"run": [sys.executable, "-c", "pass"]},
        "webhook": {"url": f"http://127.0.0.1:{free_port()}/nobody-listens", "retries": 0},
        "mqtt": {"port": free_port()},  # no broker: it keeps reconnecting
    }
    assert kind in options, f"add the new built-in {kind!r} here"
    return options[kind]


@pytest.mark.parametrize("kind", sorted(BUILTINS))
def test_every_builtin_handles_what_it_asked_for_and_stops_cleanly(
    config_file, subscribers, tmp_path, kind
):
    # given a built-in with its default topics
    path = config_file(subscribers=[{"type": kind, **quiet_options(kind, tmp_path)}])
    topics = subscriber_class(kind).default_topics
    with Bus(path) as bus:
        process = subscribers.start(path, kind)
        bus.wait_subscriptions(len(topics))
        # when a label and an event arrive
        bus.label("thumbs_up")
        bus.event("thumbs_up")
        # then it handled those its topics name (an unreachable service counts as an error)
        expected = len({"label", "event"} & set(topics))
        bus.status_of(f"subscriber:{kind}", lambda b: b["delivered"] + b["errors"] == expected)
        # and SIGTERM stops it cleanly, its last status saying offline
        assert subscribers.stop(process) == 0
        bus.status_of(f"subscriber:{kind}", lambda body: body["state"] == "offline")


def test_print_shows_the_best_guess_beside_unknown_and_a_first_event_as_first():
    from sightd.subscribers.printer import PrintSubscriber, format_line

    assert PrintSubscriber.default_topics == ("label", "event")
    unsure = {"kind": "label", "camera": "cam0", "captured_at": 0.0, "label": "unknown",
              "confidence": 0.41, "scores": {"fist": 0.41, "palm": 0.33}}  # fmt: skip
    assert format_line(unsure).endswith("cam0 unknown 0.41 (best guess fist)")
    first = {"kind": "event", "camera": "cam0", "at": 0.0, "label": "nothing",
             "confidence": 0.9, "previous": None}  # fmt: skip
    assert format_line(first).endswith("cam0 nothing 0.90 (first)")
    assert format_line({**first, "previous": "nothing", "label": "fist"}).endswith("(was nothing)")
