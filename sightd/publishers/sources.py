"""Frame sources: where a camera's pictures come from, behind one `read(timeout)` interface.

Live sources (a webcam, an rtsp/http stream) are read continuously by a background thread that
keeps only the newest frame, so a caller never gets a frame older than one camera interval.
Recorded sources (a video file, an image folder, the synthetic pattern) are not live: each
`read` returns the next frame on demand, so the capture's fps decides how fast they play.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from sightd.config import CameraConfig
from sightd.images import IMAGE_EXTENSIONS, is_image_file, read_image

log = logging.getLogger("sightd.sources")

STALL_SECONDS = 10.0  # a live source silent this long (opening included) counts as failed
STREAM_TIMEOUT_MS = 10_000  # FFmpeg's own open/read timeout for stream URLs
Frame = tuple[np.ndarray, float]  # (BGR uint8 HxWx3, captured_at in UNIX seconds)


class SourceError(Exception):
    """The source cannot be opened or stopped delivering; the capture retries it."""


class SourceEnded(SourceError):
    """A video file or image folder with loop: false has been played to its end."""


def open_source(camera: CameraConfig):
    """The frame source `camera.source` names; raises SourceError if it cannot be opened."""
    source = camera.source
    if isinstance(source, int) or source.isdigit():
        return LiveSource(int(source), f"webcam {source}")
    if source == "synthetic":
        return SyntheticSource()
    if "://" in source:
        return LiveSource(source, redact(source))
    path = Path(source).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, camera.loop)
    return VideoFileSource(path, camera.loop)


def describe(camera: CameraConfig) -> str:
    """The source as it may appear in logs and status: stream passwords removed."""
    return redact(str(camera.source))


def redact(url: str) -> str:
    return re.sub(r"://[^/@]*@", "://***@", url)


class LiveSource:
    """A webcam or stream, read as fast as it delivers by a thread that keeps the newest frame."""

    def __init__(self, target: int | str, name: str):
        self.name = name
        self._target = target
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._fresh = False  # the newest frame has not been returned by read() yet
        self._error: str | None = None
        self._closing = False
        self._last_frame = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"read {name}", daemon=True)
        self._thread.start()

    def read(self, timeout: float) -> Frame | None:
        with self._cond:
            self._cond.wait_for(lambda: self._fresh or self._error, timeout)
            if self._fresh:
                self._fresh = False
                return self._latest
            if self._error:
                raise SourceError(self._error)
        silent = time.monotonic() - self._last_frame
        if silent > STALL_SECONDS:
            raise SourceError(f"{self.name}: no frame for {silent:.0f} s")
        return None

    def close(self) -> None:
        with self._cond:
            self._closing = True
        # A read stuck in a driver cannot be interrupted; the thread releases the device
        # itself when the read returns, and being a daemon thread it never blocks exit.
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        capture = None
        try:
            capture = self._open()
            while not self._closing:
                ok, frame = capture.read()
                if not ok or frame is None:
                    raise SourceError(f"{self.name}: read failed (unplugged, or the stream ended)")
                with self._cond:
                    self._latest = (frame, time.time())
                    self._fresh = True
                    self._last_frame = time.monotonic()
                    self._cond.notify_all()
        except Exception as exc:  # cv2.error included: the reader reports, the capture retries
            self._fail(str(exc) if isinstance(exc, SourceError) else f"{self.name}: {exc}")
        finally:
            if capture is not None:
                capture.release()

    def _open(self) -> cv2.VideoCapture:
        if isinstance(self._target, int):
            capture = cv2.VideoCapture(self._target)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # drivers that honour it queue less
        else:
            timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            timeouts += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            capture = cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, timeouts)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.name}")
        return capture

    def _fail(self, message: str) -> None:
        with self._cond:
            self._error = message
            self._cond.notify_all()


class VideoFileSource:
    """A recorded video, one frame per read; with loop it starts again at its end."""

    def __init__(self, path: Path, loop: bool):
        self.name = f"video file {path}"
        self.path, self.loop = path, loop
        if not path.is_file():
            raise SourceError(f"{self.name} does not exist")
        self._capture = self._open()

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


class ImageFolderSource:
    """Every image in a folder in name order, one per read; the folder is re-listed per cycle."""

    def __init__(self, path: Path, loop: bool):
        self.name = f"image folder {path}"
        self.path, self.loop = path, loop
        self._queue = self._list()

    def read(self, timeout: float) -> Frame | None:
        for _ in range(2):  # at most one new cycle per read
            while self._queue:
                image = read_image(self._queue.pop(0))
                if image is not None:
                    return image, time.time()
            if not self.loop:
                raise SourceEnded(f"{self.name} ended (loop: false)")
            self._queue = self._list()
        raise SourceError(f"{self.name}: none of its images can be decoded")

    def close(self) -> None:
        self._queue = []

    def _list(self) -> list[Path]:
        try:
            files = sorted(p for p in self.path.iterdir() if is_image_file(p))
        except OSError as exc:
            raise SourceError(f"cannot list {self.name}: {exc.strerror}") from None
        if not files:
            kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise SourceError(f"{self.name} holds no images ({kinds})")
        return files


class SyntheticSource:
    """A moving test pattern: colour bars, a sweeping box and a frame counter; needs no camera."""

    name = "synthetic"

    def __init__(self, width: int = 640, height: int = 480):
        self.width, self.height = width, height
        bars = np.array(
            [[192, 192, 192], [0, 192, 192], [192, 192, 0], [0, 192, 0], [192, 0, 192]],
            np.uint8,
        )
        columns = bars[np.arange(width) * len(bars) // width]
        self._background = np.ascontiguousarray(np.broadcast_to(columns, (height, width, 3)))
        self._count = 0

    def read(self, timeout: float) -> Frame | None:
        frame = self._background.copy()
        side = self.height // 4
        x = (self._count * 8) % (self.width - side)
        y = self.height // 2 - side // 2
        cv2.rectangle(frame, (x, y), (x + side, y + side), (255, 255, 255), -1)
        cv2.putText(frame, str(self._count), (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
        self._count += 1
        return frame, time.time()

    def close(self) -> None:
        pass
