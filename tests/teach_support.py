"""A `sightd run` for the Teach tests: a video camera whose roi is red, a three-colour data set
of 20 images a class, the colour model served through runs/latest with hot reload on, and a
train section that trains in seconds (2 epochs, no minimum of steps)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import yaml
from conftest import COLORS, free_port, wait_for, write_color_dataset, write_video
from pipeline_support import Processes

ROI = [0.5, 0.0, 0.5, 1.0]  # the right half of the frame: red, while the left is blue
FRAME = (120, 160)  # height, width
CSRF = {"X-Sightd-CSRF": "1"}


def camera_frame() -> np.ndarray:
    frame = np.empty((*FRAME, 3), np.uint8)
    frame[:, : FRAME[1] // 2] = COLORS["blue"]
    frame[:, FRAME[1] // 2 :] = COLORS["red"]
    return frame


def teach_setup(root: Path, checkpoint: Path) -> Path:
    """Write the camera's video, the data set, runs/first (the colour model) with runs/latest
    pointing at it, and the config; returns the config's path."""
    video = write_video(root / "cam.avi", [camera_frame()] * 20, fps=10)
    write_color_dataset(root / "data", per_class=20)
    first = root / "runs" / "first"
    first.mkdir(parents=True)
    shutil.copy(checkpoint, first / "model.safetensors")
    os.symlink("first", root / "runs" / "latest")
    names = ("frames", "labels", "status", "status_in")
    config = {
        "cameras": [{"name": "cam0", "source": str(video), "fps": 10, "roi": ROI}],
        "transport": {n: f"tcp://127.0.0.1:{free_port()}" for n in names}
        | {"status_interval": 0.5},
        "model": {
            "path": str(root / "runs" / "latest" / "model.safetensors"),
            "device": "cpu",
            "reload": True,
            # torch: each deploy then swaps without making an engine export first (10-15 s
            # here); tests/test_new_user.py deploys through the default engine
            "engine": "torch",
        },
        "train": {
            "data_dir": str(root / "data"),
            "out_dir": str(root / "runs"),
            "epochs": 2,
            "min_steps": 0,
            "device": "cpu",
        },
        "subscribers": [],
        "daemon": {"heartbeat_timeout": 10.0},
        "http": {"listen": f"127.0.0.1:{free_port()}"},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def base_url(config_path: Path) -> str:
    return f"http://{yaml.safe_load(config_path.read_text())['http']['listen']}"


def start_daemon(processes: Processes, config_path: Path) -> str:
    """`sightd run` on the config, waited for until every part is online; returns its URL."""
    processes.sightd("run", "-c", config_path)
    url = base_url(config_path)

    def healthy() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        return False

    wait_for(healthy, 90, "sightd run online", processes.logs)
    return url


def save_screenshot(element, path: Path) -> None:
    """A page element as a small PNG (a palette of 128 colours), for the README."""
    from PIL import Image  # matplotlib's dependency; only this helper needs it

    image = Image.open(io.BytesIO(element.screenshot())).convert("RGB")
    small = image.quantize(128, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, optimize=True)
