"""The status forwarder: one place where every component's status can be read.

Components that bind no socket of their own (subscribers, the supervisor) PUB-connect to
transport.status_in; an XSUB/XPUB proxy in a thread passes it all on to transport.status.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import zmq

from sightd.config import TransportConfig
from sightd.protocol import pack_message, status_body
from sightd.transport import bind, connect_publisher, context

log = logging.getLogger("sightd.daemon")


class StatusForwarder:
    def __init__(self, transport: TransportConfig):
        self.transport = transport
        self._thread: threading.Thread | None = None
        self._control: zmq.Socket | None = None
        self._publisher: zmq.Socket | None = None

    def start(self) -> None:
        """Bind both ends now, so a taken port is a one-line error before any child starts."""
        frontend = bind(zmq.XSUB, self.transport.status_in, self.transport)
        try:
            backend = bind(zmq.XPUB, self.transport.status, self.transport)
        except Exception:
            frontend.close()
            raise
        address = f"inproc://sightd-forwarder-{id(self)}"
        self._control = context().socket(zmq.PAIR)
        self._control.bind(address)
        self._thread = threading.Thread(
            target=_proxy, args=(frontend, backend, address), name="status-forwarder", daemon=True
        )
        self._thread.start()
        self._publisher = connect_publisher(self.transport.status_in, self.transport)

    def publish(self, state: str, **figures) -> None:
        """Send the supervisor's own status.supervisor message through the forwarder."""
        if self._publisher is not None:
            body = status_body("supervisor", state, **figures)
            with contextlib.suppress(zmq.Again):  # status is best effort, never a blocker
                self._publisher.send_multipart(
                    pack_message("status", "supervisor", body), zmq.NOBLOCK
                )

    def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        if self._thread is not None and self._control is not None:
            self._control.send(b"TERMINATE")
            self._thread.join(timeout=2.0)
            self._control.close()
            self._thread = self._control = None


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
