"""What runs first inside each supervised process: name it, tie it to its parent, run the part.

Children fork from multiprocessing's fork server, which imports the parts and the worker's
engine once before any thread exists (torch + fork from a threaded parent do not mix), so a
restarted worker is up in a fraction of a second instead of re-importing its engine; with an
engine other than torch, torch is never imported there, so no child has it. The supervisor
names the engine (`set_preload`) before the first child starts. Everything a child needs travels in
a picklable ChildSpec plus the shared stop flag and heartbeat; the config travels as plain data
and is validated again here.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sightd.errors import SightdError
from sightd.plugins import load
from sightd.process import Runtime, configure_logging, set_process_title

PRELOAD = ["sightd.daemon.child", "sightd.publishers.inference", "sightd.publishers.capture"]


def _child_context():
    if "forkserver" not in mp.get_all_start_methods():  # pragma: no cover - not on Windows
        return mp.get_context("spawn")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def set_preload(engine: str) -> list[str]:
    """What the fork server imports: the parts and the module of `engine` (a name from
    sightd.engines.base.ENGINES). Takes effect only before the fork server starts, i.e.
    before the first child; the modules named are returned."""
    from sightd.engines.base import MODULES

    modules = [*PRELOAD, MODULES[engine][0]]
    if SPAWN.get_start_method() == "forkserver":
        SPAWN.set_forkserver_preload(modules)
    return modules


SPAWN = _child_context()
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
EXIT_USER_ERROR = 2  # the child's one-line SightdError was logged; a restart may not help


class StopFlag:
    """The stop event a supervisor shares with a child, safe against the child being killed.

    multiprocessing.Event is a condition variable: a process killed while waiting on it leaves
    it inconsistent, and the next set() blocks forever. A pipe keeps no such state: set() in
    the supervisor writes one byte, the child polls the read end (EOF, when the supervisor is
    gone, reads as set too). Only the read end travels to the child.
    """

    def __init__(self) -> None:
        self._reader, self._writer = SPAWN.Pipe(duplex=False)
        self._local = threading.Event()  # set() inside the child (its SIGTERM handler)

    def set(self) -> None:
        self._local.set()
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.send_bytes(b"stop")

    def is_set(self) -> bool:
        return self._local.is_set() or self._reader.poll(0)

    def wait(self, timeout: float | None = None) -> bool:
        return self._local.is_set() or self._reader.poll(timeout) or self._local.is_set()

    def fileno(self) -> int:
        """Readable once the supervisor has set it (or is gone): a loop polls it beside its
        sockets. A set() inside the child (its SIGTERM handler) shows in is_set() alone."""
        return self._reader.fileno()

    def __getstate__(self) -> dict:
        return {"_reader": self._reader, "_writer": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _local=threading.Event())


@dataclass(frozen=True)
class ChildSpec:
    """One supervised part: `target` is "module:function", called as f(config, *args, runtime)."""

    name: str  # "capture:cam0", "infer", "subscriber:print"; the title is sightd.<name>
    target: str
    args: tuple[Any, ...] = field(default_factory=tuple)
    group: str = "subscribers"  # or "captures", "worker": started together, stopped in reverse


def stop_fork_server() -> None:
    """Ask multiprocessing's fork server to exit and wait until it has, so that a stopped
    supervisor leaves no process behind. `_stop` is private, but it is the only way there is."""
    if SPAWN.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)
    if stop is not None:
        with contextlib.suppress(OSError, ChildProcessError):
            stop()


def child_main(spec: ChildSpec, config_data: dict, stop, heartbeat) -> None:
    """The entry point of every child process (multiprocessing target)."""
    die_with_parent(os.getppid())  # the fork server, which exits when the supervisor does
    runtime = Runtime(spec.name, stop=stop, beat=lambda: _beat(heartbeat))
    set_process_title(runtime.process_title)
    configure_logging(config_data.get("log_level", "info"))
    # The supervisor stops us through `stop`; a Ctrl-C reaching the whole process group must
    # not kill us mid-write, and a SIGTERM from someone else means the same as `stop`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log = logging.getLogger(f"sightd.{spec.name}")
    try:
        from sightd.config import SightdConfig

        config = SightdConfig.model_validate(config_data)
        # No beat before the part's own first one: importing torch, loading the model and
        # starting CUDA take seconds, covered by the supervisor's longer startup grace.
        load(spec.target, "child target")(config, *spec.args, runtime)
    except SightdError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_USER_ERROR)
    if not stop.is_set():
        log.warning("returned without being asked to stop")


def _beat(heartbeat) -> None:
    heartbeat.value = time.monotonic()  # CLOCK_MONOTONIC is one clock for every process


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL us when the supervisor dies, even by SIGKILL: no orphans."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    else:  # elsewhere, poll: a child whose parent changed was orphaned
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os._exit(1)


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)
