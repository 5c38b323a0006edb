"""The console's view of the bus: what each camera, component and the model last said, kept for
the page's first paint (`snapshot()`) and fanned out to every open page as it happens.

The HTTP component's main thread feeds it (as it feeds BusState); the pages read it from the
server's event loop. Each page has a bounded queue filled with `loop.call_soon_threadsafe`, so
the reader never waits for a page: a page that falls behind loses its oldest messages (counted)
and is told to fetch the snapshot again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections import deque
from typing import Any

from sightd.checkpoint import read_info
from sightd.errors import SightdError
from sightd.protocol import is_worker
from sightd.web.metrics import count, text

EVENTS = 200  # events kept for the timeline
QUEUE = 256  # messages waiting for one page; past this its oldest go
MAX_CLASSES = 64  # scores sent per label: a page shows bars, not a table of thousands
KEPT_STATUS = (
    *("state", "reason", "fps", "latency_ms", "source", "retry_in"),
    *("model_error", "model_errors"),  # the Teach page sees a deployed model refused
)


class Subscriber:
    """One page's queue, living on the server's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int = QUEUE):
        self.loop = loop
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(size)
        self.dropped = 0
        self.behind = False  # lost messages since it last read: it should fetch the snapshot

    def put(self, message: str | None) -> None:
        """On the loop: queue a message, dropping the oldest when full (None ends the stream)."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
            self.behind = True
        self.queue.put_nowait(message)


class Hub:
    def __init__(self, cameras: list[str], status_interval: float, model_path: str | None = None):
        self.cameras = list(cameras)
        self.status_interval = status_interval
        self.model_path = model_path
        self.lock = threading.Lock()
        self.labels: dict[str, dict[str, Any]] = {}
        self.stable: dict[str, str | None] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self.components: dict[str, dict[str, Any]] = {}
        self.children: dict[str, dict[str, Any]] = {}
        self.given_up: list[str] = []
        self.model: dict[str, Any] | None = None
        self._card_for: str | None = None  # the digest the checkpoint was last read for
        self._file_card: dict[str, Any] = {}
        self.subscribers: set[Subscriber] = set()
        self.dropped = 0  # messages lost by pages that fell behind, all pages together
        self.features: dict[str, bool] = {}  # explain, teach: what else the server offers

    # ---- input, from the bus reader's thread -----------------------------------------------

    def feed(self, kind: str, name: str, body: dict[str, Any]) -> None:
        if kind == "label":
            message = self._label(name, body)
        elif kind == "event":
            message = self._event(name, body)
        elif kind == "status":
            message = self._status(name, body)
        else:
            return
        if message is not None:
            self._publish(message)

    def _label(self, camera: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if camera not in self.cameras:
            return None
        scores = body.get("scores")
        scores = scores if isinstance(scores, dict) else {}
        kept = sorted(
            ((c, s) for c, s in scores.items() if isinstance(c, str) and _fraction(s) is not None),
            key=lambda item: -item[1],
        )[:MAX_CLASSES]
        label = {
            "camera": camera,
            "label": text(body.get("label")) or "",
            "confidence": _fraction(body.get("confidence")),
            "scores": {c[:200]: round(s, 4) for c, s in kept},
            "seq": _int(body.get("seq")),
            "captured_at": count(body.get("captured_at")),
            "inferred_at": count(body.get("inferred_at")),
        }
        with self.lock:
            self.labels[camera] = label
            label["stable"] = self.stable.get(camera)
        return {"type": "label", **label}

    def _event(self, camera: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if camera not in self.cameras:
            return None
        event = {
            "camera": camera,
            "label": text(body.get("label")) or "",
            "previous": text(body.get("previous")),
            "confidence": _fraction(body.get("confidence")),
            "at": count(body.get("at")),
            "snapshot": text(body.get("snapshot")),
        }
        with self.lock:
            self.events.appendleft(event)
            self.stable[camera] = event["label"]
        return {"type": "event", **event}

    def _status(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        at = count(body.get("at")) or 0.0
        card = self._model_card(body.get("model")) if is_worker(name) else None
        with self.lock:
            before = self.components.get(name)
            if before is not None and at <= before["at"]:
                return None  # heard twice (two endpoints) or late
            if before is None and len(self.components) > 512:
                return None  # a bus full of made-up names
            kept = {
                key: body[key]
                for key in KEPT_STATUS
                if isinstance(body.get(key), (str, int, float))
            }
            self.components[name] = {"name": name, "at": at, **kept}
            if name == "supervisor":
                self._supervisor(body)
            elif is_worker(name):
                self._stable(body.get("labels"))
                self.model = card or self.model
            message = {"type": "status", "component": self.components[name]}
            if name == "supervisor":
                message.update(children=dict(self.children), given_up=list(self.given_up))
            if is_worker(name):
                message["model"] = self.model
                message["stable"] = dict(self.stable)
        return message

    def _supervisor(self, body: dict[str, Any]) -> None:
        children = body.get("children")
        for child, info in children.items() if isinstance(children, dict) else ():
            if isinstance(info, dict):
                self.children[child] = {
                    "process": text(info.get("state")),
                    "restarts": _int(info.get("restarts")),
                    "last_failure": text(info.get("last_failure")),
                }
        given_up = body.get("given_up")
        self.given_up = (
            [g for g in given_up if isinstance(g, str)] if isinstance(given_up, list) else []
        )

    def _stable(self, labels: Any) -> None:
        for camera, label in labels.items() if isinstance(labels, dict) else ():
            if camera in self.cameras and (label is None or isinstance(label, str)):
                self.stable[camera] = label

    def _model_card(self, model: Any) -> dict[str, Any] | None:
        """The worker's model, with what its file says; the file is read once per digest (at
        start and after a hot reload), outside the lock, as a large one takes a while."""
        if not isinstance(model, dict):
            return None
        digest = text(model.get("digest")) or ""
        classes = model.get("classes")
        classes = classes if isinstance(classes, list) else []
        card = {
            "name": text(model.get("name")),
            "arch": text(model.get("arch")),
            "digest": digest,
            "classes": [c for c in classes if isinstance(c, str)][:4096],
            "engine": text(model.get("engine")),
            "device": text(model.get("device")),
        }
        if digest != self._card_for:
            self._card_for, self._file_card = digest, checkpoint_card(self.model_path, digest)
        return {**card, **self._file_card}

    # ---- output ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything a page paints first, as JSON-ready data."""
        with self.lock:
            return {
                "cameras": self.cameras,
                "labels": {
                    cam: {**label, "stable": self.stable.get(cam)}
                    for cam, label in self.labels.items()
                },
                "stable": dict(self.stable),
                "events": list(self.events),
                "components": list(self.components.values()),
                "children": dict(self.children),
                "given_up": list(self.given_up),
                "model": self.model,
                "status_interval": self.status_interval,
                "features": dict(self.features),
                "now": time.time(),
            }

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> Subscriber:
        subscriber = Subscriber(loop)
        with self.lock:
            self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self.lock:
            self.subscribers.discard(subscriber)
            self.dropped += subscriber.dropped

    def close(self) -> None:
        """End every page's stream (the server is stopping)."""
        self._send_all(None)

    def _publish(self, message: dict[str, Any]) -> None:
        if self.subscribers:  # with no page open, nothing is even encoded
            self._send_all(
                f"event: {message['type']}\ndata: {json.dumps(message, allow_nan=False)}\n\n"
            )

    def _send_all(self, data: str | None) -> None:
        with self.lock:
            subscribers = list(self.subscribers)
        for subscriber in subscribers:
            with contextlib.suppress(RuntimeError):  # its loop closed: the server is stopping
                subscriber.loop.call_soon_threadsafe(subscriber.put, data)

    def figures(self) -> dict[str, int]:
        with self.lock:
            live = sum(s.dropped for s in self.subscribers)
            return {"pages": len(self.subscribers), "page_messages_dropped": self.dropped + live}


def _int(value: Any) -> int | None:
    number = count(value)
    return int(number) if number is not None else None


def _fraction(value: Any) -> float | None:
    number = count(value)
    return round(number, 4) if number is not None and number <= 1.0 else None


def checkpoint_card(path: str | None, digest: str) -> dict[str, Any]:
    """What the model file says about itself (test accuracy, calibration, when it was trained),
    from its header (sightd.checkpoint.read_info reads no tensors and imports no torch).
    `file_matches` says whether the file on disk is the one the worker serves."""
    if not path:
        return {}
    try:
        info, file_digest = read_info(path)
    except SightdError:  # gone or replaced by a damaged file since the worker loaded it
        return {"file_matches": False}
    card: dict[str, Any] = {
        "file_matches": file_digest == digest,
        "temperature": info.temperature,
        "calibrated": info.temperature != 1.0,
        "created_at": info.created_at,
        "image_size": info.image_size,
        "sightd_version": info.sightd_version,
    }
    accuracy = info.test_accuracy
    if isinstance(accuracy, (int, float)) and math.isfinite(accuracy):
        card["test_accuracy"] = accuracy
    return card
