"""Runs one subscriber in this process: receive, filter, queue, handle, report, watch for hangs.

The receive loop never waits on the plugin: messages go into a bounded inbox (the oldest is
dropped and counted when it is full) that a handler thread empties. A handler exception is
logged and counted and the next message is handled. A handle() call that runs past
handler_timeout cannot be cancelled in Python, so the host stops beating and raises
SubscriberStuck: under `sightd run` the process exits non-zero and the supervisor restarts it;
`sightd subscribe` exits with status 3 and says so.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import Counter, deque
from typing import Any

import zmq

from sightd.component import Component
from sightd.config import SightdConfig, TransportConfig
from sightd.process import Runtime
from sightd.protocol import decode_message
from sightd.subscribers.base import Subscriber, SubscriberContext
from sightd.subscribers.registry import parse_entry, subscriber_class
from sightd.transport import connect_subscriber, recv_parts

DRAIN_SECONDS = 3.0  # on stop, queued messages get this long to be handled (log: no loss)


class SubscriberStuck(RuntimeError):
    """handle() ran past handler_timeout; only a fresh process recovers from that."""


def run_subscriber(config: SightdConfig, index: int, runtime: Runtime) -> None:
    """Run config.subscribers[index] until runtime.stop is set (the supervisor's entry point)."""
    options = parse_entry(config.subscribers[index].model_dump(), prefix=f"subscribers[{index}]")
    log = logging.getLogger(f"sightd.{runtime.name}")
    cameras = tuple(camera.name for camera in config.cameras)
    plugin = subscriber_class(options.type)(options, SubscriberContext(runtime.name, cameras, log))
    Host(plugin, config.transport, runtime).run()


class Inbox:
    """A bounded FIFO that drops its oldest item rather than block the receiver."""

    def __init__(self, size: int):
        self._items: deque[dict[str, Any]] = deque()
        self._size = size
        self._ready = threading.Condition()
        self._closed = False

    def put(self, item: dict[str, Any]) -> bool:
        """Queue `item`; True when the oldest item was dropped to make room."""
        with self._ready:
            dropped = len(self._items) >= self._size
            if dropped:
                self._items.popleft()
            self._items.append(item)
            self._ready.notify()
            return dropped

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The oldest item, waiting for one up to `timeout` (None: until one comes); once
        closed, what is left and then None at once."""
        with self._ready:
            self._ready.wait_for(lambda: self._items or self._closed, timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def __len__(self) -> int:
        return len(self._items)


class Host(Component):
    def __init__(self, plugin: Subscriber, transport: TransportConfig, runtime: Runtime):
        super().__init__(runtime.name, transport, runtime)
        self.plugin = plugin
        self.log = plugin.log
        self.inbox = Inbox(plugin.config.queue_size)
        self.counts: Counter[str] = Counter()  # received, delivered, errors, dropped, invalid
        self.latencies: deque[float] = deque(maxlen=200)
        self.busy_since: float | None = None  # monotonic start of the running handle() call
        self.draining = threading.Event()
        self.abandon = threading.Event()
        self._seen_errors: set[str] = set()
        self.sub: zmq.Socket | None = None
        self.handler: threading.Thread | None = None

    def run(self) -> None:
        self.plugin.start()
        self.sub = connect_subscriber(self._endpoints(), self._prefixes(), self.transport)
        self.handler = threading.Thread(target=self._work, name="subscriber-handler", daemon=True)
        self.handler.start()
        self._poller = self.poller(self.sub)
        super().run()

    def cycle(self, wait: float) -> None:
        # A handle() past handler_timeout is seen within one wait (at most WAIT_STEP).
        if self.sub in dict(self._poller.poll(wait * 1000)):
            self._receive(self.sub)
        self._check_stuck()
        state = _ask(self.plugin.state, "online")
        self.set_state(state, None if state == "online" else self._why_not_online())

    def close(self) -> None:
        self.sub.close()
        # Stopped as asked: drain the inbox and close the plugin. After SubscriberStuck (or a
        # bug) no drain, no close: the handler may never return.
        if self.runtime.stop.is_set():
            self._finish(self.handler)

    def _why_not_online(self) -> str:
        error = _ask(self.plugin.figures, {}).get("error")
        return str(error) if error else "its service is unreachable"

    def _endpoints(self) -> list[str]:
        # Labels and events come from the worker; everyone's status from the status bus.
        endpoints = [self.transport.labels]
        if "status" in self.plugin.topics:
            endpoints.append(self.transport.status)
        return endpoints

    def _prefixes(self) -> list[bytes]:
        cameras = self.plugin.config.cameras
        return [
            f"{kind}.{camera}".encode()
            for kind in self.plugin.topics
            for camera in (cameras if cameras and kind != "status" else [""])
        ]

    def _receive(self, sub: zmq.Socket) -> None:
        for _ in range(1000):  # drain what is waiting, but come back to beat and check
            try:
                parts = recv_parts(sub, 2, zmq.NOBLOCK)
            except zmq.Again:
                return
            message = decode(parts)
            if message is None:
                self.counts["invalid"] += 1
                continue
            self.counts["received"] += 1
            try:
                wanted = self.plugin.wants(message)
            except Exception as exc:
                self._count_error(exc, message)
                continue
            if wanted and self.inbox.put(message):
                self.counts["dropped"] += 1

    def _check_stuck(self) -> None:
        since, limit = self.busy_since, self.plugin.config.handler_timeout
        if since is not None and time.monotonic() - since > limit:
            message = (
                f"{self.runtime.name}: handle() has run for more than {limit:g} s "
                "(handler_timeout); stopping so that the subscriber is restarted"
            )
            self.log.error("%s", message)
            raise SubscriberStuck(message)

    def _work(self) -> None:
        while not self.abandon.is_set():
            message = self.inbox.get()  # a message, or None once closed and drained
            if message is None:
                if self.draining.is_set():
                    return
                continue
            self.busy_since = time.monotonic()
            try:
                self.plugin.handle(message)
            except Exception as exc:
                self._count_error(exc, message)
            else:
                self.counts["delivered"] += 1
                self._note_latency(message)
            finally:
                self.busy_since = None

    def _note_latency(self, message: dict[str, Any]) -> None:
        origin = message.get("captured_at" if message["kind"] == "label" else "at")
        if message["kind"] != "status" and isinstance(origin, (int, float)):
            self.latencies.append(time.time() - origin)

    def _count_error(self, exc: Exception, message: dict[str, Any]) -> None:
        self.counts["errors"] += 1
        what = f"{type(exc).__name__}: {exc}"
        first = what not in self._seen_errors and len(self._seen_errors) < 100
        self._seen_errors.add(what)
        topic = f"{message['kind']} {message.get('camera', message.get('component', ''))}"
        # The first of each kind of error with its traceback, then one line each.
        self.log.error("failed on %s: %s", topic, what, exc_info=exc if first else None)

    def _finish(self, worker: threading.Thread) -> None:
        self.draining.set()
        self.inbox.close()  # the handler drains what is queued, then returns
        worker.join(DRAIN_SECONDS)
        if worker.is_alive():
            self.abandon.set()
            self.log.warning("stopping with %d messages not handled", len(self.inbox))
        try:
            self.plugin.close()
        except Exception as exc:
            self.log.error("close() failed: %s: %s", type(exc).__name__, exc)

    def figures(self) -> dict[str, Any]:
        latency = statistics.median(self.latencies) * 1000 if self.latencies else None
        since = self.busy_since  # a handle() call running long shows here before the deadline
        busy = round(time.monotonic() - since, 1) if since is not None else 0.0
        figures = {k: self.counts[k] for k in ("received", "delivered", "errors", "dropped")}
        figures.update(invalid=self.counts["invalid"], queued=len(self.inbox), busy_s=busy)
        if latency is not None:  # none to speak of when nothing was delivered
            figures["latency_ms"] = latency
        return {**figures, **_ask(self.plugin.figures, {})}


def _ask(method, default):
    """A plugin's state() or figures(); a bug there must not stop the host."""
    try:
        return method()
    except Exception:
        return default


def decode(parts: list[bytes] | None) -> dict[str, Any] | None:
    """A message for handle(): the body plus its kind; None when it breaks the protocol."""
    message = decode_message(parts)
    if message is None or message["kind"] == "frame":
        return None
    for key in ("v", "name", "topic"):
        del message[key]
    return message
