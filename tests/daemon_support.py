"""A real `sightd run` for end-to-end tests: a config of its own (free ports everywhere), its
own process group (killpg reaches every child) and a log file to show when a wait fails."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from conftest import color_frame, free_port, write_video

COLOURS = ("blue", "green", "red")


def start_sightd_run(config_path: Path, log_path: Path, env: dict) -> subprocess.Popen:
    """`sightd run -c CONFIG` as a user starts it, its output in `log_path`, in a session of its
    own so that killpg reaches every child."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sightd", "run", "-c", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def colour_video(path: Path, size=(120, 160), fps: float = 10, frames_each: int = 10) -> Path:
    """A video of blue, green then red, `frames_each` frames of each; captures loop it."""
    frames = [color_frame(c, size) for c in COLOURS for _ in range(frames_each)]
    return write_video(path, frames, fps)


class SightdRun:
    """`sightd run` on one camera playing `video` with `checkpoint`; `sections` override."""

    def __init__(self, root: Path, checkpoint: Path, video: Path, **sections):
        names = ("frames", "labels", "status", "status_in")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        config = {
            "cameras": [{"name": "cam0", "source": str(video), "fps": 5}],
            "transport": {n: f"tcp://127.0.0.1:{free_port()}" for n in names}
            | {"status_interval": 0.5},
            "model": {"path": str(checkpoint), "device": "cpu", "reload": False},
            "subscribers": [],
            "http": {"listen": f"127.0.0.1:{self.port}"},
            **sections,
        }
        self.config_path = root / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = root / "daemon.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.process = start_sightd_run(self.config_path, self.log_path, env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self) -> str:
        return self.log()[-3000:]

    def healthy(self) -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.url}healthz", timeout=2).status_code == 200
        return False

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
