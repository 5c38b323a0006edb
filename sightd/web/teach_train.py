"""The Teach page's training: `sightd train` in a process of its own, one at a time, followed
through its --progress-file.

The page follows a run through progress_events(), server-sent events made from the progress
file as it grows (one `train` event each time the state changes), so it polls nothing.

The process is the real CLI (`python -m sightd train`), given the server's train section as a
config file of its own and --no-latest, so what the worker serves changes only on deploy. It
runs at nice 10, below the worker, and picks its threads itself (the trainer's
ThreadGovernor leaves the cores the pipeline uses alone). One thread starts it and waits for
it, and lives exactly as long as it: Linux's PR_SET_PDEATHSIG follows the thread that started
a child, and with it the training dies with the server, even one killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import yaml

from sightd.config import SightdConfig, override
from sightd.errors import SightdError
from sightd.web.teach_data import DataSet, TeachError, number

log = logging.getLogger("sightd.http")

NICE = 10  # as low as the captures (cameras[].nice, 10 by default), below the worker
TAIL = 40  # lines of the trainer's output kept, to say why it failed
STOP_GRACE_S = 5.0  # after Ctrl-C (which leaves no temporary file) it is killed
ARCH = re.compile(r"^[A-Za-z0-9_]{1,32}$")  # the trainer itself names the archs it has
ACTIVE = ("starting", "training")
WATCH_S = 0.2  # how often a followed run's progress file is looked at (a stat; read on change)
IDLE_S = 1.0  # ... and the state when no run is under way (one started from elsewhere shows)
KEEP_ALIVE_S = 15.0  # a comment line on a quiet stream, so proxies keep it open


class Trainer:
    def __init__(self, config: SightdConfig, data: DataSet):
        self.config, self.data = config, data
        self._lock = threading.Lock()
        self._state: dict = {"state": "idle"}
        self._process: subprocess.Popen | None = None
        self._progress: Path | None = None
        self._stopping = False
        self._generation = 0  # counts the changes of state made here (start, end)

    def start(self, body: dict) -> dict:
        epochs = number(body, "epochs", int, 1, 10_000)
        arch = body.get("arch") or None
        if arch is not None and not (isinstance(arch, str) and ARCH.fullmatch(arch)):
            raise TeachError(400, "arch must be a model name such as seed or resnet18")
        try:
            train = override(self.config.train, "train", epochs=epochs, arch=arch)
        except SightdError as exc:
            raise TeachError(400, str(exc)) from None
        with self._lock:
            if self._state["state"] in ACTIVE:
                raise TeachError(409, "a training run is under way; one at a time")
            folder = Path(tempfile.mkdtemp(prefix="sightd-teach-"))
            config = folder / "train.yaml"
            config.write_text(yaml.safe_dump({"train": train.model_dump()}))
            self._progress = folder / "progress.jsonl"
            command = [
                *(sys.executable, "-m", "sightd", "train", str(self.data.root)),
                *("-c", str(config), "--no-latest", "--progress-file", str(self._progress)),
            ]
            self._state = {
                "state": "starting",
                "arch": train.arch,
                "started_at": time.time(),
                "_started": time.monotonic(),
            }
            self._stopping = False
            self._generation += 1
        thread = threading.Thread(
            target=self._supervise, args=(command, folder), name="teach train", daemon=True
        )
        thread.start()
        return self.state()

    def state(self) -> dict:
        """idle, starting (loading the images), training (plan, epochs so far), done (result),
        stopped, or error (reason, and the end of the trainer's output)."""
        with self._lock:
            state, progress = dict(self._state), self._progress
        started = state.pop("_started", None)
        if state["state"] in ACTIVE and progress is not None:
            state.update(_progress(progress))
            state["state"] = "training" if "plan" in state else "starting"
        if started is not None and "elapsed_s" not in state:
            state["elapsed_s"] = round(time.monotonic() - started, 1)
        return state

    def signature(self) -> tuple:
        """Changes whenever state() would say something new, elapsed time aside: cheap (a stat
        of the progress file), so a stream can look often and read the file only on change."""
        with self._lock:
            generation, progress = self._generation, self._progress
        try:
            stat = progress.stat() if progress is not None else None
        except OSError:
            stat = None
        return generation, stat and (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def active(self) -> bool:
        with self._lock:
            return self._state["state"] in ACTIVE

    def stop(self) -> dict:
        with self._lock:
            if self._state["state"] in ACTIVE:
                self._stopping = True
                if self._process is not None:
                    _interrupt(self._process)
        return self.state()

    def _supervise(self, command: list[str], folder: Path) -> None:
        tail: deque[str] = deque(maxlen=TAIL)
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                preexec_fn=_lower_and_tie(),
            )
        except OSError as exc:
            self._finish({"state": "error", "reason": f"cannot start sightd train: {exc}"})
            shutil.rmtree(folder, ignore_errors=True)
            return
        with self._lock:
            self._process = process
            if self._stopping:  # asked before it had started
                _interrupt(process)
        for line in process.stdout:
            tail.append(line.rstrip())
        code = process.wait()
        final = _progress(folder / "progress.jsonl")
        final["elapsed_s"] = round(time.monotonic() - started, 1)
        if code == 0 and "result" in final:
            final["state"] = "done"
            final["run_card"] = _run_metrics(Path(final["result"]["run_dir"]))
        elif self._stopping:
            final["state"] = "stopped"
        else:
            final.update(state="error", reason=_why(tail, code), output=list(tail))
        self._finish(final)
        shutil.rmtree(folder, ignore_errors=True)

    def _finish(self, fields: dict) -> None:
        with self._lock:
            kept = {k: self._state[k] for k in ("arch", "started_at") if k in self._state}
            self._state, self._process, self._progress = {**kept, **fields}, None, None
            self._generation += 1


async def progress_events(trainer: Trainer, stopping: threading.Event | None = None):
    """A page's stream of the training state: one `train` event at once, then one whenever the
    progress file or the state changes, and once a second while a run starts (its elapsed
    time). It ends when the page goes (Starlette cancels it) or `stopping` is set."""
    yield "retry: 2000\n\n"
    seen, sent_at = None, 0.0
    while stopping is None or not stopping.is_set():
        signature = trainer.signature()
        now = time.monotonic()
        if signature != seen or (trainer.active() and now - sent_at >= 1.0):
            state = await asyncio.to_thread(trainer.state)  # reads the progress file
            seen, sent_at = signature, now
            yield f"event: train\ndata: {json.dumps(state)}\n\n"
        elif now - sent_at >= KEEP_ALIVE_S:
            sent_at = now
            yield ": keep-alive\n\n"
        await asyncio.sleep(WATCH_S if trainer.active() else IDLE_S)


def _progress(path: Path) -> dict:
    """What the trainer's progress file says so far: plan, epochs, result, run."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    found: dict = {"epochs": []}
    for line in lines:
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            kind = event.pop("event", None)
            if kind == "plan":
                found["plan"], found["run"] = event, Path(event["run_dir"]).name
            elif kind == "epoch":
                found["epochs"].append(event)
            elif kind == "done":
                found["result"] = event
    return found


def _run_metrics(run_dir: Path) -> dict:
    """The test accuracy and calibration block of a run's metrics.json."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    keys = ("test_accuracy", "calibration", "images", "best_epoch", "per_class")
    return {key: metrics.get(key) for key in keys}


def _why(tail: deque[str], code: int) -> str:
    """The trainer's own one-line error (click prints `Error: ...`), else its last line."""
    for line in reversed(tail):
        if line.startswith("Error: "):
            return line.removeprefix("Error: ")
    last = next((line for line in reversed(tail) if line.strip()), "")
    return f"sightd train exited with code {code}" + (f": {last}" if last else "")


def _lower_and_tie():
    """What the child does between fork and exec: a lower priority, and on Linux death with
    its parent thread. Plain system calls only (the parent has threads: nothing may lock)."""
    import os

    prctl = None
    if sys.platform.startswith("linux"):
        import ctypes

        from sightd.daemon.child import PR_SET_PDEATHSIG

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            prctl = (libc.prctl, PR_SET_PDEATHSIG, int(signal.SIGKILL))

    def setup() -> None:
        os.nice(NICE)
        if prctl is not None:
            prctl[0](prctl[1], prctl[2], 0, 0, 0)

    return setup


def _interrupt(process: subprocess.Popen) -> None:
    """Ctrl-C, as a user would stop it (its temporary files go), then SIGKILL if it lingers."""
    process.send_signal(signal.SIGINT)
    threading.Timer(STOP_GRACE_S, _kill, args=(process,)).start()


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
