"""What the camera-source tests share: telling a frame's colour, and a short colour clip."""

import time
from pathlib import Path

import numpy as np
from conftest import COLORS, color_frame, write_video

from sightd.images import decode_jpeg
from sightd.sources.base import Jpeg


def pixels(frame) -> np.ndarray:
    """A source's frame as pixels: a Jpeg (passed through) decoded, as the worker would."""
    return decode_jpeg(frame.data) if isinstance(frame, Jpeg) else frame


def colour_of(frame) -> str:
    mean = pixels(frame).reshape(-1, 3).mean(axis=0)
    return min(COLORS, key=lambda name: np.abs(mean - COLORS[name]).sum())


def read_colours(source, n: int) -> list[str]:
    return [colour_of(source.read(0.5)[0]) for _ in range(n)]


def write_clip(folder: Path) -> Path:
    """A 3-frame MJPG clip: blue, green, red."""
    frames = [color_frame(c, (60, 80)) for c in ("blue", "green", "red")]
    return write_video(folder / "clip.avi", frames, fps=10)


def first_frame(source, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = source.read(0.5)
        if got is not None:
            return got
    raise AssertionError("no frame")
