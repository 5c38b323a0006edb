"""`sightd collect`: record one class's training images from a camera, like Teachable Machine.

A countdown gives the user time to get into the picture; then `count` frames, `fps` a second,
go to DIR/LABEL/NNNN.png (written atomically), numbered after the images already there. Each
image is what the worker will classify from that camera: the frame resized as its capture
publishes it (`resize`), then cut to its `roi`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import click

from sightd.config import CameraConfig, validate
from sightd.errors import SightdError

_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_NUMBERED = re.compile(r"^(\d+)\.(png|jpe?g|bmp|webp)$", re.IGNORECASE)
READ_TIMEOUT = 0.5  # seconds per read attempt; a silent camera is reported, not waited on
GIVE_UP_AFTER = 10.0  # seconds without a frame before collect stops with an error


def check_label(label: str) -> str:
    if not _LABEL.match(label):
        raise click.BadParameter(
            "use letters, digits, _, - and . (up to 64, not starting with . or -); "
            "it becomes a folder name and the class name",
            param_hint="LABEL",
        )
    return label


def parse_roi(text: str) -> list[float] | None:
    """--roi: "x,y,w,h" (fractions of the frame), or "none" for the whole frame."""
    if text.strip().lower() == "none":
        return None
    try:
        roi = [float(part) for part in text.split(",")]
        validate(CameraConfig, {"roi": roi})
    except (ValueError, SightdError) as exc:
        problem = str(exc).removeprefix("roi: ") if isinstance(exc, SightdError) else ""
        raise click.BadParameter(
            problem or "expected x,y,width,height as fractions of the frame, e.g. 0.25,0,0.5,1",
            param_hint="--roi",
        ) from None
    return roi


def camera_view(frame, camera: CameraConfig):
    """The frame as the worker classifies it: resized like its capture does, then the roi."""
    import cv2

    from sightd.preprocessing import crop_roi

    if camera.resize:
        frame = cv2.resize(frame, tuple(camera.resize), interpolation=cv2.INTER_AREA)
    return crop_roi(frame, camera.roi)


def next_number(folder: Path) -> int:
    """One past the highest NNNN image in `folder`: recording again adds, never overwrites."""
    numbers = [int(m.group(1)) for p in folder.glob("*") if (m := _NUMBERED.match(p.name))]
    return max(numbers, default=-1) + 1


def record(camera: CameraConfig, folder: Path, count: int, fps: float, countdown: int) -> int:
    """Record `count` images; returns how many were written."""
    import cv2
    from tqdm import tqdm

    from sightd.atomic import atomic_write_bytes
    from sightd.sources import SourceError, describe, open_source

    try:
        source = open_source(camera)
    except SourceError as exc:
        raise SightdError(f"cannot record from {describe(camera)}: {exc}") from None
    first = next_number(folder)
    written = 0
    try:
        _count_down(countdown, folder.name)
        next_at = time.monotonic()
        with tqdm(total=count, desc=f"recording {folder.name}", unit="img") as progress:
            while written < count:
                time.sleep(max(0.0, next_at - time.monotonic()))
                frame = _read(source, camera)
                if frame is None:
                    click.echo(f"{describe(camera)} ended after {written} images")
                    break
                ok, png = cv2.imencode(".png", camera_view(frame, camera))
                if not ok:
                    raise SightdError("could not encode a frame as PNG")
                atomic_write_bytes(folder / f"{first + written:04d}.png", png.tobytes())
                written += 1
                progress.update()
                next_at = max(next_at + 1.0 / fps, time.monotonic())
    finally:
        source.close()
    return written


def _count_down(seconds: int, label: str) -> None:
    for left in range(seconds, 0, -1):
        click.echo(f"recording {label} in {left}...")
        time.sleep(1.0)


def _read(source, camera: CameraConfig):
    """The next frame; None when a recording has ended; SightdError for a silent camera."""
    from sightd.sources import SourceEnded, SourceError, describe

    deadline = time.monotonic() + GIVE_UP_AFTER
    while time.monotonic() < deadline:
        try:
            got = source.read(READ_TIMEOUT)
        except SourceEnded:  # a video file or image folder played to its end
            return None
        except SourceError as exc:
            raise SightdError(f"cannot record from {describe(camera)}: {exc}") from None
        if got is not None:
            return got[0]
    raise SightdError(f"no frame from {describe(camera)} for {GIVE_UP_AFTER:g} s; is it in use?")
