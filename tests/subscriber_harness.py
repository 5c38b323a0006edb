"""What the subscriber tests share: a stand-in inference worker, subscriber processes, waits.

Everything is real: the Bus binds the ZeroMQ sockets the worker and supervisor would, each
subscriber runs as `sightd subscribe` in its own process group, and the test plugin is
pip-installed from tests/plugin_pkg and found through its entry point.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from sightd.config import load_config
from sightd.protocol import event_body, label_body, pack_message, status_body, unpack_message

PLUGIN_SOURCE = Path(__file__).parent / "plugin_pkg"


class Bus:
    """The worker's labels socket and the status bus's output (XPUBs, so we see subscribers
    arrive), and the status bus's input, where the hosts' own status arrives."""

    def __init__(self, config_path: Path):
        transport = load_config(config_path).transport
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # report every subscription, even repeats
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(transport.labels)
        self.status_pub = self.ctx.socket(zmq.XPUB)
        self.status_pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.status_pub.setsockopt(zmq.LINGER, 0)
        self.status_pub.bind(transport.status)
        self.status_sub = self.ctx.socket(zmq.SUB)
        self.status_sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.status_sub.setsockopt(zmq.LINGER, 0)
        self.status_sub.bind(transport.status_in)
        self.subscriptions: list[bytes] = []
        self.seq = 0

    def wait_subscriptions(self, count: int, timeout: float = 15.0) -> None:
        """Wait until `count` topic subscriptions in all have arrived (each host sends one
        per topic it wants); publishing earlier would be lost to ZeroMQ's slow joiner."""
        deadline = time.monotonic() + timeout
        while len(self.subscriptions) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.subscriptions} of {count} subscriptions")
            for sock in (self.pub, self.status_pub):
                if sock.poll(25):
                    message = sock.recv()
                    if message[:1] == b"\x01":
                        self.subscriptions.append(message[1:])

    def label(self, label: str, camera: str = "cam0", confidence: float = 0.9, **extra) -> None:
        self.seq += 1
        captured_at = extra.pop("captured_at", time.time())
        body = label_body(camera, self.seq, captured_at, label, confidence, {label: confidence}, {})
        self.pub.send_multipart(pack_message("label", camera, {**body, **extra}))

    def event(self, label: str, previous: str | None = None, camera: str = "cam0", **extra):
        self.seq += 1
        body = event_body(camera, label, previous, extra.pop("confidence", 0.9), self.seq)
        self.pub.send_multipart(pack_message("event", camera, {**body, **extra}))

    def worker_status(self, labels: dict[str, str]) -> None:
        body = status_body("infer", "online", labels=labels)
        self.status_pub.send_multipart(pack_message("status", "infer", body))

    def status_of(self, component: str, predicate=lambda body: True, timeout: float = 10.0):
        """The first status message from `component` that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status_sub.poll(50):
                _, name, body = unpack_message(self.status_sub.recv_multipart())
                if name == component and predicate(body):
                    return body
        raise AssertionError(f"no status from {component} matching the test in {timeout} s")

    def close(self) -> None:
        self.pub.close()
        self.status_pub.close()
        self.status_sub.close()
        self.ctx.term()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Subscribers:
    """Starts `sightd subscribe` processes; close() kills every process group it started."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.processes: list[subprocess.Popen] = []

    def start(self, config_path: Path, name: str, *options: str, env: dict | None = None):
        argv = [sys.executable, "-m", "sightd", "subscribe", name, "-c", str(config_path)]
        for option in options:
            argv += ["-o", option]
        tag = f"{name}-{len(self.processes)}"
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=open(self.folder / f"{tag}.out", "w"),  # noqa: SIM115 - the child owns it
            stderr=open(self.folder / f"{tag}.err", "w"),  # noqa: SIM115
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        process.out_path = self.folder / f"{tag}.out"
        process.err_path = self.folder / f"{tag}.err"
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 10.0) -> int:
        """SIGTERM (a clean stop), then SIGKILL of the group if it does not exit in time."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            raise AssertionError(f"{process.args[4]} did not stop within {timeout} s") from None

    def close(self) -> None:
        for process in self.processes:
            kill_group(process)


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def complete_lines(path: Path) -> list[str]:
    """The lines of a file another process is writing, without a last one still in progress."""
    return path.read_text().split("\n")[:-1] if path.exists() else []


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in complete_lines(path) if line.strip()]


@functools.cache
def plugin_pythonpath() -> dict[str, str]:
    """pip-install tests/plugin_pkg (a copy: pip builds in place) into a temporary target;
    the env that puts it on a subscriber's path, where its entry point is found."""
    root = Path(tempfile.mkdtemp(prefix="sightd-plugin-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    source = shutil.copytree(PLUGIN_SOURCE, root / "src")
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    paths = [str(target), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
