"""Helpers for tests that run the real pipeline: sightd processes, collectors, deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sightd.client import subscribe


class Processes:
    """Starts `python -m sightd ...` in its own process group; kills every group at the end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []

    def sightd(self, *args: str, stdout=None) -> subprocess.Popen:
        log = open(self.log_dir / f"{args[0]}-{len(self.started)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "sightd", *map(str, args)],
            stdout=stdout or log,
            stderr=log,
            start_new_session=True,
        )
        proc.log_path = log.name
        self.started.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(Path(p.log_path).read_text(errors="replace")[-2000:] for p in self.started)

    def stop_all(self) -> None:
        for proc in self.started:
            _signal_group(proc, signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


@contextlib.contextmanager
def running_processes(log_dir: Path):
    """For a test module's `procs` fixture: every process started is stopped, even on failure."""
    processes = Processes(log_dir)
    try:
        yield processes
    finally:
        processes.stop_all()


class Collector:
    """Collects messages from an iterator in a background thread (sightd.client.subscribe or a
    process's JSON lines), so a test can wait for what it expects with a deadline."""

    def __init__(self, messages):
        self.items: list[dict] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(messages,), daemon=True)
        self._thread.start()

    def _pump(self, messages) -> None:
        for message in messages:
            self._queue.put(message)

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 20.0) -> dict:
        """The first new message that satisfies `predicate`; fails the test at the deadline."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._queue.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            self.items.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no expected message within {timeout} s; got {self.items[-5:]}")

    def drain(self) -> list[dict]:
        while True:
            try:
                self.items.append(self._queue.get_nowait())
            except queue.Empty:
                return self.items


def collect(kind: str, config: Path, **kwargs) -> Collector:
    return Collector(subscribe(kind, config=str(config), timeout=60, **kwargs))


def json_lines(proc: subprocess.Popen) -> Collector:
    return Collector(json.loads(line) for line in proc.stdout)
