"""A recorded video file, played one frame per read; with `loop` it starts again at its end."""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from sightd.sources.base import Frame, Source, SourceEnded, SourceError, SourceOptions


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
            return frame, time.time()
        if self.loop:
            raise SourceError(f"{self.name} has no readable frames")
        raise SourceEnded(f"{self.name} ended (loop: false)")

    def close(self) -> None:
        self._capture.release()

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.name}: not a video OpenCV can decode")
        return capture
