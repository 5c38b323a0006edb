"""The one loop every long-running sightd part runs: cycle, beat, report, until told to stop.

A component says only what it does in one cycle (`cycle(wait)`, which must return within
`wait` seconds, and should wait on `self.poll(...)`, which also wakes on a stop) and what its
figures are (`figures()`). The base owns the stop flag, the
heartbeat, the status cadence and the status socket: every component PUB-connects to
transport.status_in, and whoever hosts the status bus (the supervisor under `sightd run`, or
the first foreground component) forwards it all to transport.status. So one subscription to
`status` hears every camera, the worker, every subscriber and the supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import zmq

from sightd.config import TransportConfig
from sightd.process import Runtime, stop_fd
from sightd.protocol import pack_message, status_body
from sightd.transport import connect_publisher

# The longest wait of one cycle: the heartbeat is beaten at least once a second (the supervisor
# allows daemon.heartbeat_timeout, 5 s). A stop ends any wait on self.poll at once, so a longer
# step costs no stop latency; each step is a wakeup of an idle component.
WAIT_STEP = 1.0
STATES = ("starting", "online", "reconnecting", "offline")


class Component:
    def __init__(self, name: str, transport: TransportConfig, runtime: Runtime):
        self.name, self.transport, self.runtime = name, transport, runtime
        self.log = logging.getLogger(f"sightd.{name}")
        self.state, self.reason = "starting", None
        self._status = connect_publisher(transport.status_in, transport)
        self._next_status_at = 0.0

    # ---- what a subclass says ----------------------------------------------------------------

    def cycle(self, wait: float) -> None:
        """One cycle of work, returning within about `wait` seconds."""
        raise NotImplementedError

    def figures(self) -> dict[str, Any]:
        """What the status message reports beside the state: counters, rates, the model."""
        return {}

    def close(self) -> None:
        """Release what the component holds; the base then reports it offline."""

    # ---- what the base does ------------------------------------------------------------------

    def poller(self, *sockets) -> zmq.Poller:
        """A poller over `sockets` (zmq sockets or file descriptors) and the stop flag."""
        poller = zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
        fd = stop_fd(self.runtime.stop)
        if fd is not None:
            poller.register(fd, zmq.POLLIN)
        return poller

    def run(self) -> None:
        """Cycle until runtime.stop is set, then close and report offline, whatever happened."""
        try:
            while not self.runtime.stop.is_set():
                self.runtime.beat()
                self.cycle(min(WAIT_STEP, max(0.0, self._next_status_at - time.monotonic())))
                if time.monotonic() >= self._next_status_at:
                    self.publish_status()
        finally:
            try:
                self.close()
            finally:
                self.set_state("offline", self.reason if self.state != "online" else None)
                self.publish_status()
                self._status.setsockopt(zmq.LINGER, 500)  # let the last status leave
                self._status.close()

    def set_state(self, state: str, reason: str | None = None) -> None:
        """`reason` says why a component is not online: "cannot open rtsp://cam/..."."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        self.state, self.reason = state, reason if state != "online" else None

    def publish_status(self) -> None:
        """Send status now (best effort: it never blocks) and restart the cadence."""
        figures = self.figures()
        if self.reason:
            figures["reason"] = self.reason
        body = status_body(self.name, self.state, **figures)
        with contextlib.suppress(zmq.ZMQError):  # a full queue or a closed socket: drop it
            self._status.send_multipart(pack_message("status", self.name, body), zmq.NOBLOCK)
        self._next_status_at = time.monotonic() + self.transport.status_interval
