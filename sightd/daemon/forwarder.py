"""The buses: XSUB/XPUB proxies (libzmq's own zmq_proxy, in a thread) that make one stream of
what many publishers send.

The status bus: every component PUB-connects to transport.status_in (sightd.component); the
proxy passes it all on to transport.status, where `sightd status`, `listen --topic status`,
subscribers and the HTTP server read it. The labels proxy: named workers PUB-connect to
transport.labels_in, and subscribers read every worker's labels and events on
transport.labels as if one worker published them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import zmq

from sightd.config import TransportConfig
from sightd.errors import SightdError
from sightd.transport import bind, context

log = logging.getLogger("sightd.daemon")


class Forwarder:
    """Binds `frontend` (XSUB: publishers connect) and `backend` (XPUB: readers connect)."""

    def __init__(self, transport: TransportConfig, frontend: str, backend: str):
        self.transport, self.frontend, self.backend = transport, frontend, backend
        self._thread: threading.Thread | None = None
        self._control: zmq.Socket | None = None

    def start(self) -> None:
        """Bind both ends now, so a taken port is a one-line error before any child starts."""
        frontend = bind(zmq.XSUB, self.frontend, self.transport)
        try:
            backend = bind(zmq.XPUB, self.backend, self.transport)
        except Exception:
            frontend.close()
            raise
        address = f"inproc://sightd-forwarder-{id(self)}"
        self._control = context().socket(zmq.PAIR)
        self._control.bind(address)
        self._thread = threading.Thread(
            target=_proxy, args=(frontend, backend, address), name="forwarder", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def stop(self) -> None:
        if self._thread is not None and self._control is not None:
            self._control.send(b"TERMINATE")
            self._thread.join(timeout=2.0)
            self._control.close()
            self._thread = self._control = None


class StatusForwarder(Forwarder):
    def __init__(self, transport: TransportConfig):
        super().__init__(transport, transport.status_in, transport.status)


class LabelsProxy(Forwarder):
    def __init__(self, transport: TransportConfig):
        super().__init__(transport, transport.labels_in, transport.labels)


def _proxy(frontend: zmq.Socket, backend: zmq.Socket, control_address: str) -> None:
    control = context().socket(zmq.PAIR)
    control.connect(control_address)
    try:
        zmq.proxy_steerable(frontend, backend, None, control)
    except zmq.ContextTerminated:
        pass
    finally:
        for sock in (frontend, backend, control):
            sock.close(linger=0)


@contextlib.contextmanager
def foreground_status_bus(transport: TransportConfig) -> Iterator[None]:
    """Host the status bus for a part run alone (`sightd infer`, `capture`, `subscribe`),
    unless something else (a supervisor, another part run alone) hosts it already."""
    forwarder: StatusForwarder | None = StatusForwarder(transport)
    try:
        forwarder.start()
    except SightdError:
        log.debug("status bus hosted elsewhere: %s", transport.status_in)
        forwarder = None
    try:
        yield
    finally:
        if forwarder is not None:
            forwarder.stop()
