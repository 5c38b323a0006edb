"""Shared test fixtures: free ports, configs, small trained models, video files.

Tests make their own small data; nothing is downloaded and no camera is needed.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

COLORS = {"blue": (200, 40, 30), "green": (40, 190, 40), "red": (30, 40, 210)}  # BGR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def color_frame(name: str, size=(480, 640), rng: np.random.Generator | None = None) -> np.ndarray:
    """A camera-like frame of one dominant colour with noise: trivially separable classes."""
    rng = rng or np.random.default_rng(0)
    frame = np.empty((*size, 3), np.uint8)
    frame[:] = COLORS[name]
    noise = rng.integers(-25, 26, size=frame.shape, dtype=np.int16)
    return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition", detail=None):
    """Poll `predicate` until it returns something truthy, and return that; at the deadline fail
    naming `what`, with `detail()` (e.g. the end of a log) appended when given."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(0.02)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> Path:
    """Write frames with cv2.VideoWriter (MJPG in .avi: available in every OpenCV build)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), "cv2.VideoWriter could not open an MJPG writer"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def write_color_dataset(root: Path, per_class: int = 12, size=(48, 64)) -> Path:
    rng = np.random.default_rng(1)
    for name in COLORS:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{i:03d}.png"), color_frame(name, size, rng))
    return root


@pytest.fixture(scope="session")
def color_checkpoint(tmp_path_factory) -> Path:
    """A `seed` model trained in a few seconds to tell blue, green and red frames apart."""
    import torch

    from sightd.checkpoint import ModelInfo, save_checkpoint
    from sightd.cpu import ThreadGovernor
    from sightd.model import create_model
    from sightd.preprocessing import preprocess

    # as the trainer does: on a busy machine a thread on a taken core stalls every step
    ThreadGovernor().adapt()
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    classes = sorted(COLORS)
    frames = [color_frame(c, (48, 64), rng) for c in classes for _ in range(8)]
    targets = torch.tensor([i for i in range(len(classes)) for _ in range(8)])
    batch = preprocess(frames)
    model = create_model("seed", len(classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), targets).backward()
        optimizer.step()
    model.eval()
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    info = ModelInfo("seed", classes, 64, [0.5] * 3, [0.5] * 3, test_accuracy=1.0)
    save_checkpoint(path, model, info)
    return path


@pytest.fixture
def subscribers(tmp_path):
    """Subscriber host processes started by a test; all stopped at its end."""
    from subscriber_harness import Subscribers

    started = Subscribers(tmp_path)
    yield started
    started.close()


@pytest.fixture
def config_file(tmp_path):
    """Write a config with free ports; returns a function taking section overrides."""

    def make(**sections) -> Path:
        data = {
            "transport": {
                "frames": f"tcp://127.0.0.1:{free_port()}",
                "labels": f"tcp://127.0.0.1:{free_port()}",
                "status": f"tcp://127.0.0.1:{free_port()}",
                "status_in": f"tcp://127.0.0.1:{free_port()}",
                "status_interval": 0.5,
            },
            "http": {"listen": f"127.0.0.1:{free_port()}"},  # never the default 8765 in tests
            "subscribers": [],
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return make
