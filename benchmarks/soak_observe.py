"""What the soak benchmark watches, from outside the daemon: the bus, the log file, the broker,
and /proc. Every record carries the time this process saw it (received_at)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from sightd.config import SightdConfig
from sightd.protocol import ProtocolError, unpack_message
from sightd.transport import connect_subscriber


class Restarting:
    """A cumulative counter of a process that restarts: the sum over its incarnations.

    A new incarnation shows as the value going down (a fresh process counts from 0); what the
    last incarnation counted after its last status before a kill is not seen, so it is a floor.
    """

    def __init__(self) -> None:
        self.done = 0  # counted by finished incarnations
        self.current = 0
        self.incarnations = 0

    def update(self, value: int) -> None:
        if value < self.current or self.incarnations == 0:
            self.done += self.current
            self.current = 0
            self.incarnations += 1
        self.current = value

    @property
    def total(self) -> int:
        return self.done + self.current


@dataclass
class BusFigures:
    labels: list = field(default_factory=list)  # (received_at, seq, captured_at, inferred_at)
    events: list = field(default_factory=list)  # (received_at, captured seq, label)
    published: int = 0  # labels the worker says it sent between two of its statuses...
    received: int = 0  # ... and how many of those this reader got
    counters: dict = field(default_factory=dict)  # "component.figure" -> Restarting
    last_status: dict = field(default_factory=dict)  # component -> body


class BusReader(threading.Thread):
    """Reads labels, events and every status for the whole run, never falling behind.

    Labels and the worker's status travel on one socket, in order, so the labels counted
    between two worker statuses are compared exactly with the worker's own frames_out delta.
    """

    COUNTED = {
        "capture:cam0": ("frames_out",),
        "infer": ("frames_in", "frames_out", "dropped", "stale", "malformed", "decode_errors"),
        "subscriber:log": ("received", "delivered", "dropped", "errors"),
        "subscriber:mqtt": ("received", "delivered", "dropped", "errors"),
    }

    def __init__(self, config: SightdConfig):
        super().__init__(daemon=True, name="bus reader")
        # A deep queue: this reader must not lose what it measures (a Python thread can lag).
        t = config.transport.model_copy(update={"high_water_mark": 100_000})
        endpoints = [t.labels, t.status, *config.frame_endpoints()]
        self.sock = connect_subscriber(endpoints, [b"label.", b"event.", b"status."], t)
        self.figures = BusFigures()
        self.stop = threading.Event()
        self._since_status = 0
        self._last_out: int | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(200):
                continue
            while True:
                try:
                    parts = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    self._take(time.time(), *unpack_message(parts))
                except ProtocolError:
                    continue
        self.sock.close()

    def _take(self, now: float, kind: str, name: str, body: dict) -> None:
        f = self.figures
        if kind == "label":
            f.labels.append((now, body["seq"], body["captured_at"], body["inferred_at"]))
            self._since_status += 1
        elif kind == "event":
            f.events.append((now, body["seq"], body["label"]))
        else:
            self._status(body)

    def _status(self, body: dict) -> None:
        component = body["component"]
        self.figures.last_status[component] = body
        for figure in self.COUNTED.get(component, ()):
            if figure in body:
                key = f"{component}.{figure}"
                self.figures.counters.setdefault(key, Restarting()).update(body[figure])
        if component == "infer" and "frames_out" in body:
            out = body["frames_out"]
            if self._last_out is not None and out >= self._last_out:  # the same incarnation
                self.figures.published += out - self._last_out
                self.figures.received += self._since_status
            self._last_out, self._since_status = out, 0

    def counter(self, key: str) -> int:
        counter = self.figures.counters.get(key)
        return counter.total if counter else 0


class LogTail(threading.Thread):
    """Follows the log subscriber's JSON lines as they are written: (seen_at, kind, key), the
    key being a label's captured_at or an event's (seq, label)."""

    def __init__(self, path: Path):
        super().__init__(daemon=True, name="log tail")
        self.path = path
        self.lines: list[tuple[float, str, object]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        offset, rest = 0, b""
        while not self.stop.wait(0.05):
            if not self.path.exists():
                continue
            with open(self.path, "rb") as file:
                file.seek(offset)
                data = file.read()
            offset += len(data)
            *complete, rest = (rest + data).split(b"\n")
            now = time.time()
            for line in complete:
                message = json.loads(line)
                if message["kind"] == "label":
                    self.lines.append((now, "label", message["captured_at"]))
                else:
                    self.lines.append((now, "event", (message["seq"], message["label"])))


class MqttReader:
    """A paho client on sightd/cam0/label: (received_at, captured_at) of each MQTT label."""

    def __init__(self, port: int):
        import paho.mqtt.client as paho

        self.labels: list[tuple[float, float]] = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(1, 1)  # a restarted broker is found again within 1 s
        self.client.on_connect = lambda client, *_: client.subscribe("sightd/cam0/label")
        self.client.on_message = self._keep
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _keep(self, client, userdata, message) -> None:
        self.labels.append((time.time(), json.loads(message.payload)["captured_at"]))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def daemon_processes(pgid: int) -> dict[str, int]:
    """title -> pid of every live process in the daemon's process group, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # it exited meanwhile
        title = cmdline.split(b"\0")[0].decode(errors="replace").strip()
        if b"multiprocessing.forkserver" in cmdline:
            title = "sightd.forkserver"  # children are forked from it: a leak there would grow
        if int(fields[2]) == pgid and fields[0] != "Z" and title.startswith("sightd."):
            found[title.removeprefix("sightd.")] = int(entry.name)
    return found


def sample(pgid: int) -> dict[str, tuple[int, int, int]]:
    """component -> (pid, RSS kB, open files) of every daemon process now."""
    samples = {}
    for name, pid in daemon_processes(pgid).items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss = next(int(line.split()[1]) for line in status.splitlines() if "VmRSS" in line)
            samples[name] = (pid, rss, len(list(Path(f"/proc/{pid}/fd").iterdir())))
        except (OSError, StopIteration):
            continue
    return samples
