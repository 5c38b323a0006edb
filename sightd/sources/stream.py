"""A network stream (rtsp://, http://, ...), read through OpenCV's FFmpeg backend."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Literal

import cv2
from pydantic import Field

from sightd.sources.base import SourceError, SourceOptions, redact
from sightd.sources.live import LiveSource

FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"  # "key;value|key;value", read at each open
_environment = threading.Lock()


class StreamOptions(SourceOptions):
    rtsp_transport: Literal["tcp", "udp"] | None = Field(
        None, description="RTSP over TCP or UDP; null = FFmpeg's choice (TCP preferred)"
    )
    open_timeout_s: float = Field(10.0, gt=0, le=600, description="give up opening after this")
    read_timeout_s: float = Field(10.0, gt=0, le=600, description="a read that waits longer fails")


class Stream(LiveSource):
    Options = StreamOptions
    options: StreamOptions

    def __init__(self, camera, options: StreamOptions):
        self.url = str(camera.source)
        self.name = redact(self.url)
        # Opening counts as silence too: allow FFmpeg its own timeouts before calling it stalled.
        self.stall_s = max(options.open_timeout_s, options.read_timeout_s)
        super().__init__(camera, options)

    @classmethod
    def problems(cls, camera, options) -> list[str]:
        if "://" in str(camera.source):
            return []
        return [f"{camera.source!r} is not a URL; give one such as rtsp://host/path"]

    def _open(self):
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(self.options.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(self.options.read_timeout_s * 1000),
        ]
        with ffmpeg_options(rtsp_transport=self.options.rtsp_transport):
            capture = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.name}")
        return capture


@contextlib.contextmanager
def ffmpeg_options(**options: str | None):
    """Add FFmpeg options to OpenCV's environment variable for one open, keeping any the user
    set there. The variable is process-wide, so opens that change it take turns."""
    given = {k: v for k, v in options.items() if v is not None}
    if not given:
        yield
        return
    with _environment:
        before = os.environ.get(FFMPEG_OPTIONS)
        pairs = [p.split(";", 1) for p in (before or "").split("|") if ";" in p]
        merged = {key: value for key, value in pairs if key not in given} | given
        os.environ[FFMPEG_OPTIONS] = "|".join(f"{k};{v}" for k, v in merged.items())
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(FFMPEG_OPTIONS, None)
            else:
                os.environ[FFMPEG_OPTIONS] = before
