"""The worker's frame intake: drain the socket, keep each camera's newest frame, count the rest.

Everything that queued up since the last cycle is read at once, so the worker always works on
the present: older frames of a camera are dropped (and counted), never classified late.
Nothing a peer sends can stop the worker: a malformed message is counted and dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import zmq

from sightd.protocol import ProtocolError, unpack_frame
from sightd.transport import Reconnector, recv_parts

log = logging.getLogger("sightd.infer")

MAX_DRAIN = 1000  # messages read per cycle at most, so a flood cannot starve the rest of the loop


@dataclass
class IntakeCounts:
    frames_in: int = 0  # well-formed frames received
    dropped: int = 0  # superseded by a newer frame of the same camera before classification
    malformed: int = 0  # broke the protocol: parts, msgpack, version, fields, sizes, camera
    last_malformed: str | None = None
    per_camera: dict[str, Counter] = field(default_factory=dict)  # frames_in, dropped

    def camera(self, name: str) -> Counter:
        return self.per_camera.setdefault(name, Counter())


class FrameIntake:
    def __init__(
        self,
        sock: zmq.Socket,
        cameras: set[str],
        endpoints: list[str],
        poller: zmq.Poller | None = None,
    ):
        """`poller` watches `sock` and whatever else should end a wait early (the stop flag)."""
        self.sock = sock
        if poller is None:
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
        self.poller = poller
        self.cameras = cameras  # the configured cameras; frames naming any other are refused
        self.counts = IntakeCounts()
        # An oversized frame must not cut a camera off; the reconnector connects the endpoints.
        self.reconnector = Reconnector(sock, endpoints)
        # Its monitor is waited on with the frames, in the cycle's one poll, rather than polled
        # on its own every cycle: connection events are rare, frames are not.
        self.monitor = self.reconnector.monitor
        poller.register(self.monitor, zmq.POLLIN)

    def close(self) -> None:
        self.poller.unregister(self.monitor)
        self.reconnector.close()
        self.sock.close()

    def collect(self, timeout: float) -> dict[str, tuple[dict[str, Any], bytes]]:
        """Wait up to `timeout` s for frames; {camera: (header, payload)} of the newest ones."""
        newest: dict[str, tuple[dict[str, Any], bytes]] = {}
        ready = dict(self.poller.poll(timeout * 1000))
        if self.monitor in ready:
            self.reconnector.poll()
        if self.sock not in ready:
            return newest
        for _ in range(MAX_DRAIN):
            try:
                parts = recv_parts(self.sock, 3, zmq.NOBLOCK)
            except zmq.Again:
                break
            frame = self._accept(parts)
            if frame is None:
                continue
            camera = frame[0]["camera"]
            if camera in newest:
                self.counts.dropped += 1
                self.counts.camera(camera)["dropped"] += 1
            newest[camera] = frame
        return newest

    def _accept(self, parts: list[bytes] | None) -> tuple[dict[str, Any], bytes] | None:
        try:
            if parts is None:
                raise ProtocolError("frame has more than 3 parts")
            header, payload = unpack_frame(parts)
            if header["camera"] not in self.cameras:
                raise ProtocolError(f"camera {header['camera']!r} is not in the config")
        except ProtocolError as exc:
            self._malformed(str(exc))
            return None
        except Exception as exc:  # a bug of ours must not become a way to kill the worker
            self._malformed(f"{type(exc).__name__}: {exc}")
            return None
        self.counts.frames_in += 1
        self.counts.camera(header["camera"])["frames_in"] += 1
        return header, payload

    def _malformed(self, reason: str) -> None:
        self.counts.malformed += 1
        self.counts.last_malformed = reason[:200]
        log.debug("dropped a malformed frame message: %s", reason)
