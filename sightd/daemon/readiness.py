"""Whether this host's share of the pipeline works, as the supervisor tells systemd: READY=1
once it does, and the watchdog fed while it keeps working.

With a worker here, its status is the proof: `online` (model loaded, sockets bound) makes
ready, and a growing `frames_out` (labels published) feeds the watchdog. Its status rather
than every label, so that labels cost the supervisor nothing. A worker waiting for its first
model (a new user's first `sightd run`) is up as well: it makes ready and each of its
statuses feeds the watchdog, since it has nothing to label until the console deploys a model.
Without a worker nothing here labels: ready once every part has beaten, the watchdog fed while
some part runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import zmq

from sightd.config import TransportConfig
from sightd.daemon.notify import Watchdog, notify
from sightd.protocol import decode_message
from sightd.transport import connect_subscriber

log = logging.getLogger("sightd.daemon")


class Readiness:
    """Reads the workers' status (those named in `workers`, this host's) and decides."""

    def __init__(self, workers: Iterable[str]):
        self.workers = set(workers)
        self.watchdog = Watchdog()  # reads WATCHDOG_PID now, in the supervisor's process
        self.ready = False
        self.socket: zmq.Socket | None = None
        self._online: set[str] = set()  # workers heard online since the start
        self._labelled: dict[str, int] = {}  # each worker's frames_out when last heard

    def open(self, transport: TransportConfig) -> None:
        self.socket = connect_subscriber([transport.status], [b"status.infer"], transport)

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def read(self) -> None:
        """Every worker status waiting on the socket, without blocking."""
        while True:
            try:
                message = decode_message(self.socket.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            name = message.get("component") if message is not None else None
            if name in self.workers:  # not another host's worker
                self._heard(name, message)

    def _heard(self, name: str, message: dict) -> None:
        labelled = message.get("frames_out")
        if labelled and labelled != self._labelled.get(name):  # a restart counts from 0
            self._labelled[name] = labelled
            self.watchdog.saw_label()
        waiting = message.get("waiting_for_model") is True
        if waiting:
            self.watchdog.saw_label()
        if message.get("state") == "online" or waiting:
            self._online.add(name)
        if not self.ready and self._online >= self.workers:
            self.ready = True
            log.info("pipeline ready: %s", "waiting for a model" if waiting else "model loaded")
            notify("READY=1")

    def worker_down(self, name: str) -> None:
        """Until it says online again, a restarted worker is not counted as online."""
        self._online.discard(name)

    def parts_alive(self, children: list) -> None:
        """Without a worker here: the watchdog fed while some part runs (as labels of one
        camera feed it), ready once every part has beaten."""
        beating = [c for c in children if c.state == "running" and c.heartbeat.value]
        if beating or not children:
            self.watchdog.saw_label()
        if len(beating) == len(children) and not self.ready:
            self.ready = True
            log.info("ready: %d part(s) running", len(children))
            notify("READY=1")

    def tick(self) -> None:
        self.watchdog.tick()
