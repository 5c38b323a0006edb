"""The contract of a camera source kind: what a plugin in `sightd.sources` implements.

A kind is a Source subclass with a pydantic `Options` class for its own keys
(`cameras[].options` in config.yaml, validated before anything starts, errors naming the YAML
path). The capture process calls, in order:

- `Kind(camera, options)`: open it, or raise SourceError (retried with a backoff). `camera` is
  the whole CameraConfig (`source`, `loop`, ...), `options` an instance of `Kind.Options`.
- `read(timeout)` again and again: the newest frame as `(frame, captured_at)`, a BGR uint8
  HxWx3 array (or a `Jpeg`, below) and the UNIX time it was taken, or None when none came
  within `timeout` seconds
  (never block much longer: stop and the heartbeat wait on it). Raise SourceError when the
  source fails (the capture closes it and opens it again later), SourceEnded when a recording
  has ended for good.
- `close()`, once; it must not block for long.

Class methods, called without opening anything: `describe(camera, options)` names the source in
logs and status (no passwords), `problems(camera, options)` lists what would stop it from
opening at all (a missing file), for `sightd check-config`. A live source (a camera) keeps only
its newest frame; a recorded one returns the next frame on each read, so the capture's fps sets
how fast it plays.

A source whose camera already delivers JPEG may return it as it came, a `Jpeg` (see
`jpeg_frame`), when `wants_jpeg(camera)`: the capture then publishes those bytes, skipping a
decode and an encode per frame. Otherwise, or when unsure, it returns pixels; the capture
decodes a `Jpeg` it cannot pass on.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from sightd.images import image_from_bytes, jpeg_as_is

if TYPE_CHECKING:
    from sightd.config import CameraConfig


class Jpeg(NamedTuple):
    """A frame as its camera's own JPEG bytes, with the size its header declares."""

    data: bytes
    width: int
    height: int


Frame = tuple["np.ndarray | Jpeg", float]  # (BGR uint8 HxWx3 or JPEG, captured_at in UNIX s)


def wants_jpeg(camera: CameraConfig | None) -> bool:
    """The capture would publish this camera's frames as JPEG without touching the pixels
    (no resize, JPEG encoding), so a source's own JPEG can go out as it is."""
    return camera is not None and camera.encoding == "jpeg" and not camera.resize


def jpeg_frame(data: bytes) -> Jpeg | None:
    """`data` as a Jpeg if it can be published as it is (an 8-bit JPEG with no EXIF rotation
    to apply, images.jpeg_as_is), else None: decode it instead."""
    header = jpeg_as_is(data)
    return Jpeg(data, header.width, header.height) if header else None


def pixels(frame: np.ndarray | Jpeg) -> np.ndarray:
    """A frame as BGR pixels, for a reader that needs them (`sightd collect`): a camera's own
    JPEG decoded as the worker decodes it, so what is recorded is what is classified."""
    if not isinstance(frame, Jpeg):
        return frame
    image = image_from_bytes(np.frombuffer(frame.data, np.uint8))
    if image is None:
        raise SourceError("a frame does not decode")
    return image


class SourceError(Exception):
    """The source cannot be opened or stopped delivering; the capture retries it."""


class SourceEnded(SourceError):
    """A video file or image folder with loop: false has been played to its end."""


class SourceOptions(BaseModel):
    """A kind's own keys under `cameras[].options`; unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Source:
    """One opened camera source; subclass it and register it to add a kind."""

    Options: ClassVar[type[SourceOptions]] = SourceOptions
    name: str = "source"  # how logs and errors name this source (no passwords)

    def __init__(self, camera: CameraConfig, options: SourceOptions):
        self.camera, self.options = camera, options

    @classmethod
    def describe(cls, camera: CameraConfig, options: SourceOptions) -> str:
        return redact(str(camera.source))

    @classmethod
    def problems(cls, camera: CameraConfig, options: SourceOptions) -> list[str]:
        """What would stop this source from ever opening, each a sentence saying what to do."""
        return []

    def read(self, timeout: float) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def redact(url: str) -> str:
    """A URL with its user and password replaced by ***."""
    return re.sub(r"://[^/@]*@", "://***@", url)


# What a live source was granted once it opened (e.g. a webcam's real resolution), by camera
# name, so that describe() in logs and status can say so. One capture process has one camera.
_granted: dict[str, str] = {}


def report_granted(camera: CameraConfig, text: str | None) -> None:
    if text:
        _granted[camera.name] = text
    else:
        _granted.pop(camera.name, None)


def granted(camera: CameraConfig) -> str | None:
    return _granted.get(camera.name)
