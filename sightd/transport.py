"""ZeroMQ sockets configured the one safe way: linger 0, bounded queues, bounded messages,
optional CURVE encryption, private folders for ipc:// endpoints."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

import zmq

from sightd.config import TransportConfig
from sightd.errors import SightdError


def context() -> zmq.Context:
    return zmq.Context.instance()


def bind(sock_type: int, endpoint: str, transport: TransportConfig) -> zmq.Socket:
    """A socket of `sock_type` bound to `endpoint` (the server side when CURVE is on)."""
    sock = _socket(sock_type, transport)
    if transport.curve:
        from sightd.curve import make_server

        _closing_on_error(sock, make_server, sock, transport)
    if endpoint.startswith("ipc://"):
        _closing_on_error(sock, _private_ipc_folder, endpoint)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        why = exc.strerror.split(" (addr=")[0]  # pyzmq appends the address; say it once
        raise SightdError(
            f"cannot bind {endpoint}: {why}; is another sightd running, "
            "or is the port taken? Change it under transport: in the config"
        ) from None
    return sock


def connect(sock_type: int, endpoints: Iterable[str], transport: TransportConfig) -> zmq.Socket:
    """A socket of `sock_type` connected to every endpoint; ZeroMQ reconnects by itself."""
    sock = _socket(sock_type, transport)
    if transport.curve:
        from sightd.curve import make_client

        _closing_on_error(sock, make_client, sock, transport)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    for endpoint in endpoints:
        sock.connect(endpoint)
    return sock


def bind_publisher(endpoint: str, transport: TransportConfig) -> zmq.Socket:
    """A PUB socket; a slow reader loses messages (HWM), it never blocks the publisher."""
    return bind(zmq.PUB, endpoint, transport)


def connect_publisher(endpoint: str, transport: TransportConfig) -> zmq.Socket:
    """A PUB socket connected to a bound endpoint (transport.status_in), never blocking us."""
    return connect(zmq.PUB, [endpoint], transport)


def labels_publisher(transport: TransportConfig, via_proxy: bool) -> zmq.Socket:
    """The worker's labels socket: bound on transport.labels, or, for a named worker, connected
    to the labels proxy's transport.labels_in (the proxy republishes on transport.labels)."""
    if via_proxy:
        return connect_publisher(transport.labels_in, transport)
    return bind_publisher(transport.labels, transport)


def connect_subscriber(
    endpoints: Iterable[str], topics: Iterable[bytes], transport: TransportConfig
) -> zmq.Socket:
    sock = connect(zmq.SUB, endpoints, transport)
    for prefix in topics:
        sock.setsockopt(zmq.SUBSCRIBE, prefix)
    return sock


HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class Reconnector:
    """Reconnects a connecting socket to a peer that ZeroMQ has given up on.

    libzmq reconnects after a network error but not after a protocol error, and a message over
    max_message_bytes is one: without this, one oversized message would cut a subscriber off
    that publisher for good. Call poll() every loop; it never blocks. Only connections that
    completed their handshake are renewed, so a refused CURVE key does not retry in a loop.
    """

    def __init__(self, sock: zmq.Socket, endpoints: Iterable[str] = ()):
        self.sock = sock
        events = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED
        self.monitor = sock.get_monitor_socket(events)
        self.established: set[bytes] = set()
        self.refused: dict[bytes, str] = {}  # endpoint -> why its last handshake failed
        self.resets = 0  # connections lost and renewed: oversized messages or peer restarts
        # Connect only now that the monitor listens: a handshake it missed would never be
        # renewed after its connection drops.
        for endpoint in endpoints:
            sock.connect(endpoint)

    def poll(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            endpoint = event["endpoint"]
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.established.add(endpoint)
                self.refused.pop(endpoint, None)
            elif event["event"] & HANDSHAKE_FAILED:
                self.refused[endpoint] = (
                    "its keys were refused (CURVE: is this client's key authorised?)"
                    if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    else "the handshake failed (CURVE on one side only, or other keys?)"
                )
            elif endpoint in self.established:
                self.established.discard(endpoint)
                self.resets += 1
                with contextlib.suppress(zmq.ZMQError):
                    self.sock.disconnect(endpoint.decode())
                self.sock.connect(endpoint.decode())

    def why_quiet(self, endpoint: str) -> str:
        """What is known about an endpoint nothing has come from: for a user's warning."""
        key = endpoint.encode()
        if key in self.refused:
            return self.refused[key]
        if key in self.established:
            return "connected, but nothing was published there"
        return "not connected: is sightd running there, and is the port right?"

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        self.monitor.close()


def recv_parts(sock: zmq.Socket, max_parts: int, flags: int = 0) -> list[bytes] | None:
    """One multipart message, or None (after draining it) when it has more than max_parts."""
    parts = [sock.recv(flags)]
    while sock.getsockopt(zmq.RCVMORE):
        part = sock.recv()
        if len(parts) <= max_parts:
            parts.append(part)
    return None if len(parts) > max_parts else parts


def _socket(sock_type: int, transport: TransportConfig) -> zmq.Socket:
    sock = context().socket(sock_type)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, transport.high_water_mark)
    sock.setsockopt(zmq.RCVHWM, transport.high_water_mark)
    sock.setsockopt(zmq.MAXMSGSIZE, transport.max_message_bytes)
    return sock


def _private_ipc_folder(endpoint: str) -> None:
    folder = Path(endpoint.removeprefix("ipc://")).parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        os.chmod(folder, 0o700)  # others must not reach the socket file


def _closing_on_error(sock: zmq.Socket, fn, *args) -> None:
    try:
        fn(*args)
    except BaseException:
        sock.close()
        raise
