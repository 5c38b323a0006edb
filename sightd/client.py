"""The Python client: `for msg in subscribe("label"): ...` yields the bus's messages as dicts.

Each dict is the message body (docs/protocol.md) plus "kind" and "topic"; a frame's dict is its
header plus "payload" (decode it with sightd.protocol.decode_image(msg, msg["payload"])).
ZeroMQ reconnects by itself, so a subscriber may start before or outlive the pipeline.
Malformed messages are skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import zmq

from sightd.config import SightdConfig, load_config
from sightd.errors import SightdError
from sightd.protocol import KINDS, decode_message, topic
from sightd.transport import Reconnector, connect_subscriber, recv_parts

POLL_MS = 500  # longest blocking wait, so Ctrl-C and the timeout are honoured promptly
QUIET_WARNING = 10.0  # seconds without a message before saying what is known about why

log = logging.getLogger("sightd.client")


def subscribe(
    kind: str,
    camera: str | None = None,
    endpoint: str | Sequence[str] | None = None,
    config: SightdConfig | str | Path | None = None,
    timeout: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Messages of `kind` (label, event, status, frame), of one camera or all.

    endpoint: connect there instead of the config's endpoints for `kind`.
    config: a SightdConfig or a config file (default ./config.yaml, else built-in defaults).
    timeout: stop after this many seconds without a message (None: wait forever).
    For status, `camera` selects that camera's capture status.
    """
    if kind not in KINDS:
        raise SightdError(f"unknown message kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(config, SightdConfig):
        config = load_config(config)
    wanted = camera if kind != "status" or camera is None else f"capture:{camera}"
    endpoints = _endpoints(kind, camera, endpoint, config)
    prefix = topic(kind, wanted) if wanted else f"{kind}.".encode()
    sock = connect_subscriber([], [prefix], config.transport)
    reconnector = Reconnector(sock, endpoints)  # ZeroMQ alone gives up after oversized messages
    what = f"{kind} messages" + (f" of {camera}" if camera else "")
    log.info("waiting for %s on %s", what, ", ".join(endpoints))
    try:
        yield from _receive(reconnector, kind, wanted, timeout, endpoints)
    finally:
        reconnector.close()
        sock.close()


def _endpoints(kind, camera, endpoint, config: SightdConfig) -> list[str]:
    if endpoint:
        return [endpoint] if isinstance(endpoint, str) else list(endpoint)
    transport = config.transport
    if kind == "frame":
        return [config.camera_endpoint(camera)] if camera else config.frame_endpoints()
    return [transport.status if kind == "status" else transport.labels]


def _receive(
    reconnector: Reconnector, kind: str, wanted: str | None, timeout: float | None, endpoints
):
    sock = reconnector.sock
    quiet_since = warned_at = time.monotonic()
    while True:
        reconnector.poll()
        if time.monotonic() - warned_at >= QUIET_WARNING:
            _warn_quiet(reconnector, kind, endpoints, time.monotonic() - quiet_since)
            warned_at = time.monotonic()
        wait = POLL_MS
        if timeout is not None:
            left = timeout - (time.monotonic() - quiet_since)
            if left <= 0:
                return
            wait = min(wait, left * 1000)
        if not sock.poll(wait):
            continue
        message = decode_message(recv_parts(sock, 3, zmq.NOBLOCK))
        # The prefix "label.cam1" also matches "label.cam10": compare the whole name.
        if message and message["kind"] == kind and (not wanted or message["name"] == wanted):
            del message["name"]
            yield message
            # The timeout counts silence: not the time the caller spent on the message.
            quiet_since = warned_at = time.monotonic()


def _warn_quiet(reconnector: Reconnector, kind: str, endpoints: list[str], quiet: float) -> None:
    """A wrong port or a CURVE mismatch looks like silence: say what the sockets know."""
    why = "; ".join(f"{e}: {reconnector.why_quiet(e)}" for e in endpoints)
    log.warning("no %s messages for %.0f s (%s)", kind, quiet, why)
