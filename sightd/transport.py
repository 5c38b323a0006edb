"""ZeroMQ sockets configured the one safe way: linger 0, bounded queues, bounded messages."""

from __future__ import annotations

from collections.abc import Iterable

import zmq

from sightd.config import TransportConfig
from sightd.errors import SightdError


def context() -> zmq.Context:
    return zmq.Context.instance()


def bind_publisher(endpoint: str, transport: TransportConfig) -> zmq.Socket:
    """A PUB socket bound to `endpoint`; a slow reader loses messages, it never blocks us."""
    sock = context().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, transport.high_water_mark)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        raise SightdError(
            f"cannot bind {endpoint}: {exc.strerror}; is another sightd running, "
            "or is the port taken? Change it under transport: in the config"
        ) from None
    return sock


def connect_subscriber(
    endpoints: Iterable[str], topics: Iterable[bytes], transport: TransportConfig
) -> zmq.Socket:
    """A SUB socket connected to every endpoint; ZeroMQ reconnects by itself."""
    sock = context().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, transport.high_water_mark)
    sock.setsockopt(zmq.MAXMSGSIZE, transport.max_message_bytes)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    for prefix in topics:
        sock.setsockopt(zmq.SUBSCRIBE, prefix)
    for endpoint in endpoints:
        sock.connect(endpoint)
    return sock
