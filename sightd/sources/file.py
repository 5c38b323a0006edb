"""A recorded video file, played one frame per read; with `loop` it starts again at its end.

An MJPEG file whose frames the capture would publish as JPEG anyway is read without decoding:
OpenCV's FFmpeg backend hands over each compressed packet (CAP_PROP_FORMAT -1), and the
packet, a complete JPEG, is the frame.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from sightd.sources.base import (
    Frame,
    Source,
    SourceEnded,
    SourceError,
    SourceOptions,
    jpeg_frame,
    wants_jpeg,
)

MJPEG_FOURCCS = {"MJPG", "mjpg", "AVRN", "jpeg", "JPEG"}  # codec tags FFmpeg reads as MJPEG


class FileOptions(SourceOptions):
    """No keys of its own: `cameras[].loop` and `cameras[].fps` say how it plays."""


class VideoFile(Source):
    Options = FileOptions

    def __init__(self, camera, options: FileOptions):
        super().__init__(camera, options)
        self.path = Path(str(camera.source)).expanduser()
        self.loop = camera.loop
        self.name = f"video file {self.path}"
        if not self.path.is_file():
            raise SourceError(f"{self.name} does not exist")
        self.passthrough = wants_jpeg(camera)  # until a packet shows it is not a JPEG
        self._capture = self._open()

    @classmethod
    def problems(cls, camera, options) -> list[str]:
        path = Path(str(camera.source)).expanduser()
        if path.is_file():
            return []
        if path.exists():
            return [f"{path} is not a file; give a video file (or kind: folder for images)"]
        return [f"no video file or image folder at {path}; fix the path or create it"]

    def read(self, timeout: float) -> Frame | None:
        ok, frame = self._capture.read()
        if not ok and self.loop:
            self._capture.release()
            self._capture = self._open()  # reopening works for every container; seeking not
            ok, frame = self._capture.read()
        if ok and frame is not None:
            return self._frame(frame), time.time()
        if self.loop:
            raise SourceError(f"{self.name} has no readable frames")
        raise SourceEnded(f"{self.name} ended (loop: false)")

    def close(self) -> None:
        self._capture.release()

    def _frame(self, frame: np.ndarray):
        if not self.passthrough:
            return frame
        data = frame.tobytes()
        jpeg = jpeg_frame(data)
        if jpeg is not None:
            return jpeg
        image = cv2.imdecode(frame.reshape(-1), cv2.IMREAD_COLOR)  # a packet to decode after all
        if image is None:
            raise SourceError(f"{self.name}: a frame does not decode")
        return image

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.name}: not a video OpenCV can decode")
        if self.passthrough:
            self.passthrough = mjpeg(capture) and capture.set(cv2.CAP_PROP_FORMAT, -1)
        return capture


def mjpeg(capture: cv2.VideoCapture) -> bool:
    """The file's video codec is Motion JPEG (its packets are JPEG images)."""
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    return "".join(chr((code >> 8 * i) & 0xFF) for i in range(4)) in MJPEG_FOURCCS
