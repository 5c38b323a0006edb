"""Live images for the console: each camera's JPEG frames from the bus, relayed as MJPEG.

A JPEG camera's bytes go out as they came, never decoded or re-encoded; a bgr24 camera's frames
are encoded to JPEG once per frame, however many pages watch. A camera's frames are subscribed to
only while at least one page watches it (with no page open there is no frames socket at all),
by a thread that keeps only the newest frame. Every viewer then takes the newest frame whenever
it is ready for one, so a slow viewer skips frames and one that stops reading holds up nobody:
the frame is shared, each viewer waits on its own connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator

import numpy as np
import zmq

from sightd.config import SightdConfig, TransportConfig
from sightd.protocol import decode_message, encode_image
from sightd.transport import Reconnector, connect_subscriber, recv_parts

log = logging.getLogger("sightd.http")

BOUNDARY = b"frame"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}"
POLL_S = 0.25  # the reader thread's longest wait: it stops this soon after the last viewer


def part(jpeg: bytes) -> bytes:
    """One MJPEG part, ending in the next boundary: browsers show a part only once the next
    boundary arrives, so sending it right away shows each frame as soon as it is here."""
    head = b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
    return head + jpeg + b"\r\n--" + BOUNDARY + b"\r\n"


class FrameReader(threading.Thread):
    """The frames socket of one camera, alive while the camera is watched."""

    def __init__(self, feed: CameraFeed, endpoint: str, transport: TransportConfig):
        super().__init__(name=f"relay:{feed.camera}", daemon=True)
        self.feed, self.endpoint, self.transport = feed, endpoint, transport
        self.stop = threading.Event()

    def run(self) -> None:
        topic = f"frame.{self.feed.camera}".encode()
        sock = connect_subscriber([], [topic], self.transport)
        reconnector = Reconnector(sock, [self.endpoint])  # an oversized frame cuts ZeroMQ off
        try:
            while not self.stop.is_set():
                reconnector.poll()
                newest = self._drain(sock) if sock.poll(POLL_S * 1000) else None
                if newest is not None and not self.stop.is_set():
                    self.feed.offer(newest)
        except Exception:  # a bug of ours: the viewers see no new frame, the log says why
            log.exception("relay of %s stopped", self.feed.camera)
        finally:
            reconnector.close()
            sock.close()

    def _drain(self, sock: zmq.Socket) -> bytes | None:
        newest = None
        while True:
            try:
                parts = recv_parts(sock, 3, zmq.NOBLOCK)
            except zmq.Again:
                break
            message = decode_message(parts)
            if message is None or message["kind"] != "frame":
                self.feed.malformed += 1
            elif message["camera"] == self.feed.camera:  # frame.cam1 also matches cam10
                newest = message
        if newest is None:
            return None
        self.feed.frames_in += 1
        payload = newest["payload"]
        if newest["encoding"] == "jpeg":
            return part(payload)
        shape = (newest["height"], newest["width"], 3)  # unpack_frame checked the size
        return part(encode_image(np.frombuffer(payload, np.uint8).reshape(shape), "jpeg"))


class CameraFeed:
    """The newest frame of one camera and its viewers; everything but offer() runs on the
    server's event loop."""

    def __init__(self, camera: str, endpoint: str, transport: TransportConfig):
        self.camera, self.endpoint, self.transport = camera, endpoint, transport
        self.viewers = 0
        self.frame: bytes | None = None
        self.version = 0
        self.changed = asyncio.Event()
        self.reader: FrameReader | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.frames_in = self.frames_out = self.malformed = 0

    def offer(self, frame: bytes) -> None:
        """From the reader thread: the newest frame."""
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is stopping
            self.loop.call_soon_threadsafe(self._newest, frame)

    def _newest(self, frame: bytes) -> None:
        self.frame, self.version = frame, self.version + 1
        self._wake()

    def _wake(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """On the loop: end every viewer's stream and the subscription."""
        self.closed = True
        self._wake()
        self._unsubscribe()

    async def stream(self) -> AsyncIterator[bytes]:
        """One viewer's MJPEG body: the newest frame each time it has sent the last one."""
        self.loop = asyncio.get_running_loop()
        self.viewers += 1
        if self.viewers == 1:
            self._subscribe()
        try:
            yield b"--" + BOUNDARY + b"\r\n"
            seen = self.version if self.frame is None else self.version - 1
            while not self.closed:
                if self.version == seen:
                    await self.changed.wait()
                    continue
                seen, frame = self.version, self.frame
                self.frames_out += 1
                yield frame
        finally:
            self.viewers -= 1
            if self.viewers == 0:
                self._unsubscribe()

    def _subscribe(self) -> None:
        self.reader = FrameReader(self, self.endpoint, self.transport)
        self.reader.start()
        log.debug("relay: watching %s", self.camera)

    def _unsubscribe(self) -> None:
        if self.reader is not None:
            self.reader.stop.set()  # it closes its socket within POLL_S; no wait on the loop
            self.reader = None
            self.frame = None  # a frame from before the gap would be shown as live


class Relay:
    """Every camera's feed; `feed(name)` is None for a camera the config does not have."""

    def __init__(self, config: SightdConfig):
        transport = config.transport
        self.feeds = {
            c.name: CameraFeed(c.name, config.camera_endpoint(c.name), transport)
            for c in config.cameras
        }

    def feed(self, camera: str) -> CameraFeed | None:
        return self.feeds.get(camera)

    def close(self) -> None:
        """From any thread: end every stream."""
        for feed in self.feeds.values():
            if feed.loop is not None:
                with contextlib.suppress(RuntimeError):
                    feed.loop.call_soon_threadsafe(feed.close)

    def figures(self) -> dict[str, int]:
        feeds = self.feeds.values()
        return {
            "viewers": sum(f.viewers for f in feeds),
            "frames_relayed": sum(f.frames_in for f in feeds),
            "frames_sent": sum(f.frames_out for f in feeds),
        }
