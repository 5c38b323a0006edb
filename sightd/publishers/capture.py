"""The capture process: one camera's newest frames, paced at its fps, on its own endpoint.

A failing source is reopened with a backoff (1 s doubling to 30 s) while its status says
"reconnecting" and why; nothing is published meanwhile, never a placeholder frame. Sequence numbers
count the frames this process has published (they restart with the process). A source's own
JPEG (sources/base.py: Jpeg) goes out as it came unless `resize` or `encoding: bgr24` needs the
pixels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

from sightd.backoff import Backoff
from sightd.component import Component
from sightd.config import CameraConfig, SightdConfig
from sightd.images import decode_jpeg
from sightd.process import RateMeter, Runtime
from sightd.protocol import pack_encoded_frame, pack_frame
from sightd.sources import SourceEnded, SourceError, describe, open_source
from sightd.sources.base import Jpeg, wants_jpeg
from sightd.transport import bind_publisher

log = logging.getLogger("sightd.capture")

RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # seconds before reopening a failed source, doubling
READ_WAIT = 0.5  # a live source's read does not wake on a stop: bounded, so a stop is prompt


def run_capture(config: SightdConfig, camera: str, runtime: Runtime) -> None:
    """Publish `camera`'s frames until runtime.stop is set."""
    lower_priority(config.camera(camera).nice)
    Capture(config, config.camera(camera), runtime).run()


def lower_priority(nice: int) -> None:
    """Run below the worker's CPU priority, every thread of this process (on Linux a thread's
    nice value is its own: import-time pools exist already, later threads inherit it)."""
    tasks = Path("/proc/self/task")
    for tid in [int(t) for t in os.listdir(tasks)] if tasks.is_dir() else [0]:
        with contextlib.suppress(OSError):  # a pool thread that has just exited
            # Never raised: that needs privileges, and whoever started us may have niced us.
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)


class Capture(Component):
    def __init__(self, config: SightdConfig, camera: CameraConfig, runtime: Runtime):
        super().__init__(f"capture:{camera.name}", config.transport, runtime)
        self.camera = camera
        self.period = 1.0 / camera.fps if camera.fps > 0 else 0.0
        cv2.setNumThreads(1)  # per-frame work is small; threads would only contend for cores
        self.sock = bind_publisher(config.camera_endpoint(camera.name), config.transport)
        self.source = None
        self.backoff = Backoff(RETRY_FIRST, RETRY_MAX)
        self.ended = False  # a recording that ended: stay up, idle, and say so
        self.seq = self.captured = self.attempts = self.failures = 0
        self.passed_through = 0  # frames published as the source's own JPEG bytes
        self.rate = RateMeter()
        self.next_frame_at = time.monotonic()
        log.info("%s: publishing %s", self.name, describe(camera))

    def cycle(self, wait: float) -> None:
        if self.ended:
            self.runtime.stop.wait(wait)
        elif self.source is None:
            self._open_when_due(wait)
        elif self._wait_for_frame_time(wait):
            self._publish_next()

    def close(self) -> None:
        self._drop_source()
        self.sock.close()

    def _open_when_due(self, wait: float) -> None:
        remaining = self.backoff.remaining()
        if remaining > 0:
            self.runtime.stop.wait(min(remaining, wait))
            return
        self.attempts += 1
        try:
            self.source = open_source(self.camera)
        except SourceError as exc:
            self._failed(str(exc))

    def _wait_for_frame_time(self, wait: float) -> bool:
        """Sleep towards the next frame time; True once it has come."""
        remaining = self.next_frame_at - time.monotonic()
        if remaining > 0:
            self.runtime.stop.wait(min(remaining, wait))
        return time.monotonic() >= self.next_frame_at and not self.runtime.stop.is_set()

    def _publish_next(self) -> None:
        try:
            got = self.source.read(READ_WAIT)
        except SourceEnded as exc:
            log.info("%s: %s; publishing stops", self.name, exc)
            self._drop_source()
            self.ended = True
            self.set_state("offline", str(exc))
            return
        except SourceError as exc:
            self._failed(str(exc))
            return
        if got is None:
            return
        frame, captured_at = got
        self.captured += 1
        try:
            parts = self._pack(frame, captured_at)
        except SourceError as exc:
            self._failed(str(exc))
            return
        self.sock.send_multipart(parts, copy=False)  # PUB drops for a slow reader; never blocks
        self.seq += 1
        self.rate.add()
        if self.state != "online":
            log.info("%s: online (%s)", self.name, describe(self.camera))
        self.set_state("online")
        self.backoff.succeeded()
        self.next_frame_at = max(self.next_frame_at + self.period, time.monotonic())

    def _pack(self, frame: np.ndarray | Jpeg, captured_at: float) -> list[bytes]:
        """The frame message: a source's own JPEG as it came when nothing here needs pixels,
        else the pixels (a JPEG decoded first), resized and encoded as configured."""
        camera = self.camera
        if isinstance(frame, Jpeg):
            if wants_jpeg(camera):
                self.passed_through += 1
                return pack_encoded_frame(
                    camera.name, self.seq, frame.data, frame.width, frame.height, captured_at
                )
            frame = decode_jpeg(frame.data)
            if frame is None:
                raise SourceError(f"{self.source.name}: a JPEG frame does not decode")
        if camera.resize:
            frame = cv2.resize(frame, tuple(camera.resize), interpolation=cv2.INTER_AREA)
        return pack_frame(
            camera.name, self.seq, frame, captured_at, camera.encoding, camera.jpeg_quality
        )

    def _failed(self, message: str) -> None:
        self._drop_source()
        self.failures += 1
        delay = self.backoff.failed()
        self.set_state("reconnecting", message)
        log.warning("%s: %s; retrying in %.0f s", self.name, message, delay)

    def _drop_source(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def figures(self) -> dict:
        figures = dict(
            source=describe(self.camera),
            frames_captured=self.captured,
            frames_out=self.seq,
            passed_through=self.passed_through,
            fps=round(self.rate.rate(), 2),
            attempts=self.attempts,
            failures=self.failures,
        )
        if self.state == "reconnecting":
            figures["retry_in"] = round(self.backoff.remaining(), 1)
        return figures
