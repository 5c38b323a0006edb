"""What every long-running sightd component shares: a name, a stop flag, a heartbeat.

A component's loop is `while not runtime.stop.is_set(): ...; runtime.beat()`, with a timeout
on every blocking call. Run in the foreground (`sightd capture`) SIGINT/SIGTERM set the stop
flag; under the supervisor the flag and the heartbeat are shared with the parent process.
Either flag has a file descriptor that turns readable once it is set, so a loop can wait on
its sockets and the stop at once and sleep long without making a stop wait for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class StopEvent:
    """threading.Event's set, is_set and wait, and `fileno()`: a pipe readable once set (a
    signal handler may set it; the byte it writes wakes whoever polls the pipe)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def set(self) -> None:
        if not self._event.is_set():
            self._event.set()
            with contextlib.suppress(OSError):  # full or closed: it is readable already
                os.write(self._write, b"x")

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def fileno(self) -> int:
        return self._read


def stop_fd(stop) -> int | None:
    """The descriptor that turns readable when `stop` is set; None for a plain Event."""
    fileno = getattr(stop, "fileno", None)
    return fileno() if fileno is not None else None


@dataclass
class Runtime:
    name: str  # "capture:cam0", "infer", "subscriber:mqtt"
    stop: threading.Event | StopEvent = field(default_factory=StopEvent)
    beat: Callable[[], None] = lambda: None  # proves liveness to the supervisor's watchdog

    @property
    def process_title(self) -> str:
        return f"sightd.{self.name}"


def set_process_title(title: str) -> None:
    """Shown by `ps` and `top`, so a user can tell the children apart."""
    try:
        import setproctitle

        setproctitle.setproctitle(title)
    except ImportError:  # optional at run time; ps then shows python
        pass


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=LOG_FORMAT, force=True)


def foreground_runtime(name: str, log_level: str = "info") -> Runtime:
    """A Runtime for a component run directly from the CLI: Ctrl-C and SIGTERM stop it."""
    runtime = Runtime(name)
    set_process_title(runtime.process_title)
    configure_logging(log_level)

    def request_stop(signum, _frame):
        logging.getLogger("sightd").info("%s: stopping (signal %d)", name, signum)
        runtime.stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return runtime


class RateMeter:
    """Counts events and reports a rate over the last report interval."""

    def __init__(self) -> None:
        self.count = 0
        self._last_count = 0
        self._last_time = time.monotonic()

    def add(self, n: int = 1) -> None:
        self.count += n

    def rate(self) -> float:
        now = time.monotonic()
        elapsed = max(now - self._last_time, 1e-9)
        value = (self.count - self._last_count) / elapsed
        self._last_count, self._last_time = self.count, now
        return value
