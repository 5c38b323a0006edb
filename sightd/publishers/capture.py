"""The capture process: one camera's newest frames, paced at its fps, on its own endpoint.

A failing source is reopened with a backoff (1 s doubling to 30 s) while the status topic says
"reconnecting"; nothing is published meanwhile, never a placeholder frame. Sequence numbers
count the frames this process has published (they restart with the process).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import cv2
import zmq

from sightd.config import CameraConfig, SightdConfig
from sightd.process import RateMeter, Runtime
from sightd.protocol import pack_frame, pack_message, status_body
from sightd.publishers.sources import SourceEnded, SourceError, describe, open_source
from sightd.transport import bind_publisher

log = logging.getLogger("sightd.capture")

RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # seconds before reopening a failed source, doubling
WAIT_STEP = 0.5  # longest wait of any kind: stop and the heartbeat stay prompt


def run_capture(config: SightdConfig, camera: str, runtime: Runtime) -> None:
    """Publish `camera`'s frames until runtime.stop is set."""
    lower_priority(config.camera(camera).nice)
    capture = Capture(config, config.camera(camera), runtime)
    try:
        capture.run()
    finally:
        capture.close()


def lower_priority(nice: int) -> None:
    """Run below the worker's CPU priority, every thread of this process (on Linux a thread's
    nice value is its own: import-time pools exist already, later threads inherit it)."""
    tasks = Path("/proc/self/task")
    for tid in [int(t) for t in os.listdir(tasks)] if tasks.is_dir() else [0]:
        with contextlib.suppress(OSError):  # a pool thread that has just exited
            # Never raised: that needs privileges, and whoever started us may have niced us.
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)


class Backoff:
    """Delays between attempts: RETRY_FIRST doubling to RETRY_MAX, reset by a success."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.retry_at = 0.0

    def failed(self) -> float:
        self.delay = RETRY_FIRST if self.delay == 0 else min(self.delay * 2, RETRY_MAX)
        self.retry_at = time.monotonic() + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0

    def remaining(self) -> float:
        return max(0.0, self.retry_at - time.monotonic())


class Capture:
    def __init__(self, config: SightdConfig, camera: CameraConfig, runtime: Runtime):
        self.camera, self.runtime = camera, runtime
        self.component = f"capture:{camera.name}"
        self.period = 1.0 / camera.fps if camera.fps > 0 else 0.0
        self.status_interval = config.transport.status_interval
        cv2.setNumThreads(1)  # per-frame work is small; threads would only contend for cores
        self.sock = bind_publisher(config.camera_endpoint(camera.name), config.transport)
        self.source = None
        self.backoff = Backoff()
        self.state, self.error = "starting", None
        self.seq = self.attempts = self.failures = 0
        self.rate = RateMeter()
        self.next_frame_at = self.next_status_at = time.monotonic()

    def run(self) -> None:
        log.info("%s: publishing %s", self.component, describe(self.camera))
        while not self.runtime.stop.is_set():
            self.runtime.beat()
            self._maybe_send_status()
            if self.state == "offline":  # the recording ended: stay up, idle, report it
                self.runtime.stop.wait(WAIT_STEP)
            elif self.source is None:
                self._open_when_due()
            elif self._wait_for_frame_time():
                self._publish_next()

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
        self.state = "offline"
        self._send_status()
        self.sock.close()

    def _open_when_due(self) -> None:
        wait = self.backoff.remaining()
        if wait > 0:
            self.runtime.stop.wait(min(wait, WAIT_STEP))
            return
        self.attempts += 1
        try:
            self.source = open_source(self.camera)
        except SourceError as exc:
            self._failed(str(exc))

    def _wait_for_frame_time(self) -> bool:
        """Sleep towards the next frame time; True once it has come."""
        wait = self.next_frame_at - time.monotonic()
        if wait > 0:
            self.runtime.stop.wait(min(wait, WAIT_STEP))
        return time.monotonic() >= self.next_frame_at and not self.runtime.stop.is_set()

    def _publish_next(self) -> None:
        try:
            got = self.source.read(WAIT_STEP)
        except SourceEnded as exc:
            log.info("%s: %s; publishing stops", self.component, exc)
            self._drop_source()
            self.state, self.error = "offline", str(exc)
            return
        except SourceError as exc:
            self._failed(str(exc))
            return
        if got is None:
            return
        frame, captured_at = got
        if self.camera.resize:
            frame = cv2.resize(frame, tuple(self.camera.resize), interpolation=cv2.INTER_AREA)
        camera = self.camera
        parts = pack_frame(
            camera.name, self.seq, frame, captured_at, camera.encoding, camera.jpeg_quality
        )
        self.sock.send_multipart(parts, copy=False)  # PUB drops for a slow reader; never blocks
        self.seq += 1
        self.rate.add()
        if self.state != "online":
            log.info("%s: online (%s)", self.component, describe(camera))
        self.state, self.error = "online", None
        self.backoff.succeeded()
        self.next_frame_at = max(self.next_frame_at + self.period, time.monotonic())

    def _failed(self, message: str) -> None:
        self._drop_source()
        self.failures += 1
        delay = self.backoff.failed()
        self.state, self.error = "reconnecting", message
        log.warning("%s: %s; retrying in %.0f s", self.component, message, delay)

    def _drop_source(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def _maybe_send_status(self) -> None:
        if time.monotonic() >= self.next_status_at:
            self._send_status()
            self.next_status_at = time.monotonic() + self.status_interval

    def _send_status(self) -> None:
        figures = dict(
            source=describe(self.camera),
            frames_out=self.seq,
            fps=round(self.rate.rate(), 2),
            attempts=self.attempts,
            failures=self.failures,
            error=self.error,
        )
        if self.state == "reconnecting":
            figures["retry_in"] = round(self.backoff.remaining(), 1)
        body = status_body(self.component, self.state, **figures)
        # PUB never blocks; should a send fail anyway, the next status replaces this one.
        with contextlib.suppress(zmq.ZMQError):
            self.sock.send_multipart(pack_message("status", self.component, body), zmq.NOBLOCK)
