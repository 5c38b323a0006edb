"""The HTTP server's reader of the bus: status, labels and events into a BusState (and the
console's Hub): anything with a `feed(kind, name, body)`."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import zmq

from sightd.config import SightdConfig
from sightd.protocol import decode_message
from sightd.transport import Reconnector, connect_subscriber, recv_parts
from sightd.web.metrics import BusState

log = logging.getLogger("sightd.http")

TOPICS = (b"status.", b"label.", b"event.")
MAX_DRAIN = 1000  # messages per poll at most, so the caller's heartbeat stays prompt


class Sink(Protocol):
    def feed(self, kind: str, name: str, body: dict[str, Any]) -> None: ...


class BusReader:
    def __init__(self, config: SightdConfig, state: BusState, *more: Sink):
        self.state = state
        self.sinks: tuple[Sink, ...] = (state, *more)
        self.sock = connect_subscriber([], TOPICS, config.transport)
        # ZeroMQ alone stops reconnecting after an oversized message; the reconnector connects
        transport = config.transport
        self.reconnector = Reconnector(self.sock, [transport.status, transport.labels])
        self.malformed = self.errors = 0

    def poll(self, timeout: float) -> int:
        """Wait up to `timeout` s for messages, feed what came; how many were fed."""
        self.reconnector.poll()
        if not self.sock.poll(timeout * 1000):
            return 0
        fed = 0
        for _ in range(MAX_DRAIN):
            try:
                parts = recv_parts(self.sock, 2, zmq.NOBLOCK)
            except zmq.Again:
                break
            message = decode_message(parts)
            if message is None or message["kind"] == "frame":
                self.malformed += 1
                continue
            kind, name = message.pop("kind"), message.pop("name")
            for sink in self.sinks:  # each on its own: one's bug never starves the others
                try:
                    sink.feed(kind, name, message)
                except Exception:  # a bug of ours: no message may stop /healthz answering
                    self.errors += 1
                    level = logging.ERROR if self.errors <= 3 else logging.DEBUG  # not a flood
                    log.log(level, "could not take in a %s from %s", kind, name, exc_info=True)
            fed += 1
        return fed

    def close(self) -> None:
        self.reconnector.close()
        self.sock.close()
