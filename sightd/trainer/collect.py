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

from sightd.cli_options import config_option
from sightd.config import CameraConfig, load_config, override, validate
from sightd.errors import SightdError

LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")  # a class: a folder name, no path
_NUMBERED = re.compile(r"^(\d+)\.(png|jpe?g|bmp|webp)$", re.IGNORECASE)
READ_TIMEOUT = 0.5  # seconds per read attempt; a silent camera is reported, not waited on
GIVE_UP_AFTER = 10.0  # seconds without a frame before collect stops with an error


@click.command("collect")
@click.argument("label")
@config_option
@click.option(
    "--source",
    default=None,
    help="Camera index, video file, URL, image folder or 'synthetic' "
    "(default: the first camera in the config).",
)
@click.option("--count", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option(
    "--fps", type=click.FloatRange(0.1, 60), default=5.0, show_default=True, help="Images a second."
)
@click.option(
    "--data",
    type=click.Path(file_okay=False),
    default=None,
    help="Data set folder (default: train.data_dir from the config).",
)
@click.option(
    "--countdown", type=click.IntRange(0, 60), default=3, show_default=True, help="Seconds."
)
@click.option(
    "--roi",
    default=None,
    metavar="X,Y,W,H",
    help="Record only this part of the frame, as fractions (e.g. 0.25,0,0.5,1), or 'none' "
    "for all of it (default: the camera's roi from the config).",
)
def collect(
    label: str,
    config_path: str | None,
    source: str | None,
    count: int,
    fps: float,
    data: str | None,
    countdown: int,
    roi: str | None,
) -> None:
    """Record training images of LABEL from a camera into DATA/LABEL/.

    What is recorded is what the worker will classify: the camera's roi (and resize). Collect
    a few classes, then `sightd train DATA`. Images already in the folder are kept; new ones
    are numbered after them.
    """
    from sightd.images import is_image_file
    from sightd.sources import with_source

    config = load_config(config_path)
    check_label(label)
    camera = config.cameras[0] if config.cameras else CameraConfig()
    if source is not None:  # its kind is told by the new source
        camera = with_source(camera, int(source) if source.isdigit() else source)
    camera = override(camera, "cameras[0]", loop=False)
    if roi is not None:
        camera = camera.model_copy(update={"roi": parse_roi(roi)})
    folder = Path(data or config.train.data_dir) / label
    written = record(camera, folder, count, fps, countdown)
    total = sum(1 for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else 0
    click.echo(f"wrote {written} images to {folder} ({total} there now)")
    click.echo(f"next: collect the other classes, then `sightd train {folder.parent}`")


def check_label(label: str) -> str:
    if not LABEL.fullmatch(label):
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
    """Record `count` images; returns how many were written.

    The first frame is read before the countdown: a camera or stream opens in the background
    and only its first read says whether it could, so a source that cannot be opened is one
    error line before anything else is drawn. A live camera's first frame is then dropped (it
    shows the moment before the countdown); a recording's is the first image.
    """
    from sightd.sources import SourceError, describe, open_source
    from sightd.sources.live import LiveSource

    try:
        source = open_source(camera)
    except SourceError as exc:
        raise SightdError(f"cannot record from {describe(camera)}: {exc}") from None
    try:
        frame = _read(source, camera)
        _count_down(countdown, folder.name)
        if countdown and frame is not None and isinstance(source, LiveSource):
            frame = _read(source, camera)
        return _save(source, camera, frame, folder, count, fps)
    finally:
        source.close()


def _save(source, camera: CameraConfig, frame, folder: Path, count: int, fps: float) -> int:
    """`frame` and the source's next ones as numbered PNGs, `fps` a second, under a progress
    bar; stops early, saying so, when a recording ends."""
    import cv2
    from tqdm import tqdm

    from sightd.atomic import atomic_write_bytes
    from sightd.sources import describe

    first, written = next_number(folder), 0
    next_at = time.monotonic()
    with tqdm(total=count, desc=f"recording {folder.name}", unit="img") as progress:
        while frame is not None:
            ok, png = cv2.imencode(".png", camera_view(frame, camera))
            if not ok:
                raise SightdError("could not encode a frame as PNG")
            atomic_write_bytes(folder / f"{first + written:04d}.png", png.tobytes())
            written += 1
            progress.update()
            if written == count:
                return written
            next_at = max(next_at + 1.0 / fps, time.monotonic())
            time.sleep(max(0.0, next_at - time.monotonic()))
            frame = _read(source, camera)
    click.echo(f"{describe(camera)} ended after {written} images")
    return written


def _count_down(seconds: int, label: str) -> None:
    for left in range(seconds, 0, -1):
        click.echo(f"recording {label} in {left}...")
        time.sleep(1.0)


def _read(source, camera: CameraConfig):
    """The next frame; None when a recording has ended; SightdError for a silent camera."""
    from sightd.sources import SourceEnded, SourceError, describe
    from sightd.sources.base import pixels

    deadline = time.monotonic() + GIVE_UP_AFTER
    while time.monotonic() < deadline:
        try:
            got = source.read(READ_TIMEOUT)
            if got is not None:
                return pixels(got[0])  # a camera's own JPEG (passed through) decoded
        except SourceEnded:  # a video file or image folder played to its end
            return None
        except SourceError as exc:
            raise SightdError(f"cannot record from {describe(camera)}: {exc}") from None
    raise SightdError(f"no frame from {describe(camera)} for {GIVE_UP_AFTER:g} s; is it in use?")
