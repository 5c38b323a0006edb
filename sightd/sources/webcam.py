"""A webcam (a device index, or a device path such as /dev/video2), read by OpenCV."""

from __future__ import annotations

import logging

import cv2
from pydantic import Field, field_validator

from sightd.sources.base import SourceError, SourceOptions, report_granted, wants_jpeg
from sightd.sources.live import LiveSource

log = logging.getLogger("sightd.sources")


class WebcamOptions(SourceOptions):
    width: int | None = Field(None, ge=1, le=8192, description="ask for this frame width")
    height: int | None = Field(None, ge=1, le=8192, description="ask for this frame height")
    fps: float | None = Field(
        None, gt=0, le=1000, description="ask the camera for this rate (not cameras[].fps)"
    )
    fourcc: str | None = Field(None, description='pixel format, e.g. "MJPG" or "YUYV"')

    @field_validator("fourcc")
    @classmethod
    def _four_characters(cls, value: str | None) -> str | None:
        if value is not None and not (len(value) == 4 and value.isascii() and value.isprintable()):
            raise ValueError('expected four ASCII characters, e.g. "MJPG" or "YUYV"')
        return value


class Webcam(LiveSource):
    """Asks the camera for the options' format, size and rate, and reports what it granted:
    a driver silently picks the nearest it has, and only reading the values back tells."""

    Options = WebcamOptions
    options: WebcamOptions

    def __init__(self, camera, options: WebcamOptions):
        self.target = device(camera.source)
        self.name = f"webcam {camera.source}"
        report_granted(camera, None)
        super().__init__(camera, options)

    def _open(self):
        capture = cv2.VideoCapture(self.target)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.name}")
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # drivers that honour it queue less
        asked = self.options
        # The format first: on V4L2 the sizes and rates on offer depend on it.
        if asked.fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*asked.fourcc))
        if asked.fourcc == "MJPG" and wants_jpeg(self.camera):
            # The camera's own JPEG, not pixels (live.as_frame tells which came): V4L2 hands
            # over its buffer unconverted, FFmpeg its packet.
            capture.set(cv2.CAP_PROP_CONVERT_RGB, 0)
            capture.set(cv2.CAP_PROP_FORMAT, -1)
        if asked.width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, asked.width)
        if asked.height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, asked.height)
        if asked.fps:
            capture.set(cv2.CAP_PROP_FPS, asked.fps)
        got = granted_settings(capture)
        report_granted(self.camera, got)
        wanted = requested_settings(asked)
        if wanted:
            log.info("%s: asked for %s, granted %s", self.name, wanted, got)
        else:
            log.info("%s: opened at %s", self.name, got)
        return capture


def device(source: int | str) -> int | str:
    """A device index as an int (what OpenCV takes), a device path as it is."""
    if isinstance(source, int) or source.isdigit():
        return int(source)
    return source


def requested_settings(options: WebcamOptions) -> str:
    parts = []
    if options.width or options.height:
        parts.append(f"{options.width or '?'}x{options.height or '?'}")
    if options.fps:
        parts.append(f"{options.fps:g} fps")
    if options.fourcc:
        parts.append(options.fourcc)
    return ", ".join(parts)


def granted_settings(capture) -> str:
    """What the camera runs at, read back: "1280x720, 30 fps, MJPG"."""
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    parts = [f"{width}x{height}"]
    fps = capture.get(cv2.CAP_PROP_FPS)
    if fps and fps > 0:
        parts.append(f"{fps:g} fps")
    code = fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))
    if code:
        parts.append(code)
    return ", ".join(parts)


def fourcc_text(value: float) -> str:
    """cv2's FOURCC code as its four characters ("" when the backend does not say)."""
    code = int(value)
    text = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4))
    return text if code > 0 and text.isprintable() else ""
