"""What webcams and streams share: a thread that reads as fast as they deliver, keeps the newest
frame, and reports a failure or a stall to the next `read`.

A device asked for its compressed frames (a webcam's MJPG, see webcam.py) hands over buffers
of bytes, not pixels: each is kept as a Jpeg when it is one the capture can pass on, and
decoded otherwise, so no frame the thread skips is ever decoded.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from sightd.sources.base import Frame, Jpeg, Source, SourceError, jpeg_frame

STALL_SECONDS = 10.0  # a live source silent this long (opening included) counts as failed


class LiveSource(Source):
    """Subclasses say how to open the device (`_open`, in the reader thread) and may set
    `stall_s`; reading, keeping the newest frame and failing are done here."""

    stall_s = STALL_SECONDS

    def __init__(self, camera, options):
        super().__init__(camera, options)
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._fresh = False  # the newest frame has not been returned by read() yet
        self._error: str | None = None
        self._closing = False
        self._last_frame = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"read {self.name}", daemon=True)
        self._thread.start()

    def read(self, timeout: float) -> Frame | None:
        with self._cond:
            self._cond.wait_for(lambda: self._fresh or self._error, timeout)
            latest, self._fresh = (self._latest if self._fresh else None), False
            if latest is None and self._error:
                raise SourceError(self._error)
        if latest is not None:
            return as_frame(latest[0], self.name), latest[1]  # outside the lock: it may decode
        silent = time.monotonic() - self._last_frame
        if silent > self.stall_s:
            raise SourceError(f"{self.name}: no frame for {silent:.0f} s")
        return None

    def close(self) -> None:
        with self._cond:
            self._closing = True
        # A read stuck in a driver cannot be interrupted; the thread releases the device
        # itself when the read returns, and being a daemon thread it never blocks exit.
        self._thread.join(timeout=1.0)

    def _open(self):
        """An opened cv2.VideoCapture (or anything with read() and release()); SourceError."""
        raise NotImplementedError

    def _run(self) -> None:
        capture = None
        try:
            capture = self._open()
            while not self._closing:
                ok, frame = capture.read()
                if not ok or frame is None:
                    raise SourceError(f"{self.name}: read failed (unplugged, or the stream ended)")
                taken = time.time()
                with self._cond:
                    self._latest = (frame, taken)
                    self._fresh = True
                    self._last_frame = time.monotonic()
                    self._cond.notify_all()
        except Exception as exc:  # cv2.error included: the reader reports, the capture retries
            self._fail(str(exc) if isinstance(exc, SourceError) else f"{self.name}: {exc}")
        finally:
            if capture is not None:
                capture.release()

    def _fail(self, message: str) -> None:
        with self._cond:
            self._error = message
            self._cond.notify_all()


def as_frame(frame: np.ndarray, name: str) -> np.ndarray | Jpeg:
    """A device's frame as the capture takes it: pixels as they are; a buffer of bytes (a
    compressed frame) as a Jpeg to pass on, or decoded when it is not one to pass on."""
    if frame.ndim == 3:
        return frame
    data = frame.tobytes()
    jpeg = jpeg_frame(data)
    if jpeg is not None:
        return jpeg
    image = cv2.imdecode(frame.reshape(-1), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{name}: a frame does not decode")
    return image
