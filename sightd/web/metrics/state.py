"""The state /metrics and /healthz report, folded from the bus's status, label and event messages.

Status figures (frames_out, delivered, ...) count from 0 in each process, so they start again
when a component restarts. Each exported counter adds a sample's increase over the previous
one; a figure that went down means a new process, and all of that component's figures then
count from 0 again, so an exported counter never goes down. Labels and events are counted as
they pass, and feed the latency histograms. render.py and health.py read what this keeps.

Every label value is bounded: cameras by the config, components by what the supervisor runs,
labels by the model's classes and unknown. A message is never trusted to have a field: a
missing or mistyped one is skipped.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.utils import floatToGoString

from sightd.protocol import is_worker

STATES = ("starting", "online", "reconnecting", "offline")  # what a component's status says
# Seconds; a forward pass and a capture-to-label delay are a few to a few hundred milliseconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
SILENT_INTERVALS = 3  # a component silent for this many status intervals is not heard from
MAX_COMPONENTS = 256  # components heard on the bus beyond those expected are ignored past this
MAX_CAMERAS = 64  # when the config does not say which cameras there are
MAX_LABELS = 100  # label values per camera until the model's classes are known
MAX_CLASSES = 4096  # as many as a message can carry (protocol.py's map limit)
UNKNOWN = "unknown"  # the label below model.min_confidence
OTHER = "(other)"  # any label value outside the bound; no class folder is named like this

# name (without _total) -> (help, label names); each counter sums one figure over restarts
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sightd_frames_captured": ("Frames read from the camera's source.", ("camera",)),
    "sightd_frames_published": ("Frames the capture published on the bus.", ("camera",)),
    "sightd_frames_received": ("Frames of the camera the inference worker received.", ("camera",)),
    "sightd_frames_dropped": (
        "Frames the worker did not classify: superseded (a newer frame of the camera came "
        "first) or stale (older than model.max_frame_age).",
        ("camera", "reason"),
    ),
    "sightd_capture_source_opens": ("Attempts to open the camera's source.", ("camera",)),
    "sightd_capture_source_failures": (
        "Times the camera's source failed to open or to read.",
        ("camera",),
    ),
    "sightd_labels": (
        "Labels published, by camera and label (a class of the model, or unknown).",
        ("camera", "label"),
    ),
    "sightd_events": (
        "Stable-label changes (events), by camera and new label.",
        ("camera", "label"),
    ),
    "sightd_worker_errors": (
        "Inference worker errors: malformed frame messages, frames that did not decode, "
        "failed forward passes.",
        ("reason",),
    ),
    "sightd_model_reloads": ("Times the worker swapped in a changed model file.", ()),
    "sightd_model_reload_errors": ("Changed model files the worker refused.", ()),
    "sightd_subscriber_messages_received": (
        "Messages the subscriber received from the bus.",
        ("subscriber",),
    ),
    "sightd_subscriber_deliveries": (
        "Messages the subscriber's handler took without an error.",
        ("subscriber",),
    ),
    "sightd_subscriber_errors": ("Messages the subscriber's handler failed on.", ("subscriber",)),
    "sightd_subscriber_messages_dropped": (
        "Messages dropped because the subscriber's queue was full.",
        ("subscriber",),
    ),
    "sightd_component_restarts": ("Times the supervisor restarted the component.", ("component",)),
}

# status figure -> counter, by kind of component; a figure missing from a status is skipped
CAPTURE_FIGURES = {
    "frames_captured": "sightd_frames_captured",
    "frames_out": "sightd_frames_published",
    "attempts": "sightd_capture_source_opens",
    "failures": "sightd_capture_source_failures",
}
CAMERA_FIGURES = {  # the worker's figures of one camera: figure -> (counter, extra labels)
    "frames_in": ("sightd_frames_received", ()),
    "dropped": ("sightd_frames_dropped", ("superseded",)),
    "stale": ("sightd_frames_dropped", ("stale",)),
}
WORKER_FIGURES = {
    "malformed": ("sightd_worker_errors", ("malformed",)),
    "decode_errors": ("sightd_worker_errors", ("decode",)),
    "classify_errors": ("sightd_worker_errors", ("classify",)),
    "reloads": ("sightd_model_reloads", ()),
    "model_errors": ("sightd_model_reload_errors", ()),
}
SUBSCRIBER_FIGURES = {
    "received": "sightd_subscriber_messages_received",
    "delivered": "sightd_subscriber_deliveries",
    "errors": "sightd_subscriber_errors",
    "dropped": "sightd_subscriber_messages_dropped",
}

Key = tuple[str, tuple[str, ...]]  # (counter name, label values)


def count(value: Any) -> float | None:
    """A figure as a number, or None when it is missing, not a number, negative or infinite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def text(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


class Cumulative:
    """One component's cumulative figures, summed over its restarts."""

    def __init__(self) -> None:
        self.last: dict[Key, float] = {}
        self.totals: dict[Key, float] = {}

    def add(self, sample: dict[Key, float]) -> bool:
        """Add the increase since the last sample; True when a figure went down (a restart)."""
        restarted = any(value < self.last.get(key, 0.0) for key, value in sample.items())
        if restarted:
            self.last = {}  # the new process counts every figure from 0
        for key, value in sample.items():
            self.totals[key] = self.totals.get(key, 0.0) + value - self.last.get(key, 0.0)
            self.last[key] = value
        return restarted


class Histogram:
    """Observations in BUCKETS, as Prometheus histograms count them (le: value <= bound)."""

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        running, buckets = 0, []
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            buckets.append((floatToGoString(bound), running))
        return buckets


@dataclass
class Heard:
    """What was last heard from one component."""

    name: str
    body: dict[str, Any] = field(default_factory=dict)
    heard_at: float | None = None  # monotonic time of its last status
    at: float = 0.0  # the last status's own time (UNIX), to skip a duplicate or older one
    figures: Cumulative = field(default_factory=Cumulative)
    restarted_at: float | None = None  # the supervisor restarted it; cleared when it is online


class BusState:
    """Everything /metrics and /healthz say, updated by feed() from one thread and read by the
    server from another (a lock guards it)."""

    def __init__(
        self,
        status_interval: float,
        expected: Iterable[str] = (),
        cameras: Iterable[str] | None = None,
        own: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.status_interval = status_interval
        self.expected = list(dict.fromkeys(expected))  # judged by /healthz, in this order
        self.cameras = set(cameras) if cameras is not None else None
        self.own = own  # this server's own component name: it never judges itself
        self.clock = clock
        self.lock = threading.Lock()
        self.components: dict[str, Heard] = {}
        self.children: dict[str, dict[str, Any]] = {}  # the supervisor's view of its children
        self.given_up: set[str] = set()
        self.model: dict[str, str] | None = None
        self.classes: set[str] | None = None  # the model's, from the worker's status
        self.seen_classes: set[str] | None = None  # ... or from a label's scores until then
        self.seen_cameras: set[str] = set()
        self.seen_labels: dict[str, set[str]] = defaultdict(set)
        self.labels: dict[tuple[str, str], int] = defaultdict(int)
        self.events: dict[tuple[str, str], int] = defaultdict(int)
        self.inference: dict[str, Histogram] = {}
        self.latency: dict[str, Histogram] = {}
        self.started_at = clock()

    # ---- input -------------------------------------------------------------------------------

    def feed(self, kind: str, name: str, body: dict[str, Any]) -> None:
        """One message as protocol.unpack_message returns it."""
        with self.lock:
            if kind == "status":
                self._status(name, body)
            elif kind == "label":
                self._label(name, body)
            elif kind == "event":
                self._event(name, body)

    def _component(self, name: str) -> Heard | None:
        component = self.components.get(name)
        if component is None and len(self.components) < MAX_COMPONENTS + len(self.expected):
            component = self.components[name] = Heard(name)
        return component

    def _status(self, name: str, body: dict[str, Any]) -> None:
        component = self._component(name)
        if component is None:
            return
        at = count(body.get("at"))
        if at is not None:
            if at <= component.at:
                return  # heard twice (on two endpoints), or older than what we have
            component.at = at
        component.body, component.heard_at = body, self.clock()
        if body.get("state") == "online":
            component.restarted_at = None
        component.figures.add(self._sample(name, body))
        if is_worker(name):
            self._model(body.get("model"))
        elif name == "supervisor":
            self._supervisor(body)

    def _sample(self, name: str, body: dict[str, Any]) -> dict[Key, float]:
        sample: dict[Key, float] = {}

        def put(figures: dict[str, Any], metric: str, labels: tuple[str, ...], figure: str):
            value = count(figures.get(figure))
            if value is not None:
                sample[(metric, labels)] = value

        kind, _, suffix = name.partition(":")
        if kind == "capture" and self._camera_ok(suffix):
            for figure, metric in CAPTURE_FIGURES.items():
                put(body, metric, (suffix,), figure)
        elif kind == "subscriber" and suffix:
            for figure, metric in SUBSCRIBER_FIGURES.items():
                put(body, metric, (suffix,), figure)
        elif is_worker(name):
            for figure, (metric, labels) in WORKER_FIGURES.items():
                put(body, metric, labels, figure)
            cameras = body.get("cameras")
            for camera, figures in cameras.items() if isinstance(cameras, dict) else ():
                if isinstance(figures, dict) and self._camera_ok(camera):
                    for figure, (metric, labels) in CAMERA_FIGURES.items():
                        put(figures, metric, (camera, *labels), figure)
        elif name == "supervisor":
            children = body.get("children")
            for child, info in children.items() if isinstance(children, dict) else ():
                if isinstance(info, dict) and self._component(child) is not None:
                    put(info, "sightd_component_restarts", (child,), "restarts")
        return sample

    def _supervisor(self, body: dict[str, Any]) -> None:
        children = body.get("children")
        children = children if isinstance(children, dict) else {}
        for name, info in children.items():
            if not isinstance(info, dict):
                continue
            child = self._component(name)
            if child is None:
                continue
            before = self.children.get(name, {})
            pid, old_pid = info.get("pid"), before.get("pid")
            restarts, old_restarts = count(info.get("restarts")), count(before.get("restarts"))
            new_pid = isinstance(pid, int) and isinstance(old_pid, int) and pid != old_pid
            more = name in self.children and (restarts or 0) > (old_restarts or 0)
            if new_pid or more:
                child.restarted_at = self.clock()  # until it says it is online again
            # a child waiting to restart has no pid: keep the old one to see the new one come
            self.children[name] = {**info, "pid": pid if isinstance(pid, int) else old_pid}
        given_up = body.get("given_up")
        given_up = given_up if isinstance(given_up, list) else []
        self.given_up = {n for n in given_up if isinstance(n, str) and n in self.components}

    def _model(self, model: Any) -> None:
        if isinstance(model, dict):
            classes = model.get("classes")
            if isinstance(classes, list) and 0 < len(classes) <= MAX_CLASSES:
                self.classes = {c for c in classes if isinstance(c, str)}
            names = [c for c in classes if isinstance(c, str)] if isinstance(classes, list) else []
            self.model = {
                "arch": text(model.get("arch")) or "",
                "digest": text(model.get("digest")) or "",
                "classes": ",".join(names)[:4096],
            }
        elif isinstance(model, str):  # "arch@digest", from a worker that says no more
            arch, _, digest = model.partition("@")
            classes = ",".join(sorted(self.seen_classes or ()))
            self.model = {"arch": arch[:200], "digest": digest[:200], "classes": classes[:4096]}

    def _label(self, camera: str, body: dict[str, Any]) -> None:
        label = text(body.get("label"))
        if label is None or not self._camera_ok(camera):
            return
        scores = body.get("scores")
        if self.classes is None and isinstance(scores, dict) and 0 < len(scores) <= MAX_CLASSES:
            self.seen_classes = {c for c in scores if isinstance(c, str)}
        self.labels[(camera, self._bounded_label(camera, label))] += 1
        captured, inferred = count(body.get("captured_at")), count(body.get("inferred_at"))
        if captured is not None and inferred is not None:
            latency = self.latency.setdefault(camera, Histogram())
            latency.observe(max(0.0, inferred - captured))
        inference_s = count(body.get("inference_s"))
        if inference_s is not None:
            self.inference.setdefault(camera, Histogram()).observe(inference_s)

    def _event(self, camera: str, body: dict[str, Any]) -> None:
        label = text(body.get("label"))
        if label is not None and self._camera_ok(camera):
            self.events[(camera, self._bounded_label(camera, label))] += 1

    def _camera_ok(self, camera: str) -> bool:
        if not camera:
            return False
        if self.cameras is not None:
            return camera in self.cameras
        if camera not in self.seen_cameras and len(self.seen_cameras) < MAX_CAMERAS:
            self.seen_cameras.add(camera)
        return camera in self.seen_cameras

    def _bounded_label(self, camera: str, label: str) -> str:
        classes = self.classes or self.seen_classes
        if classes:
            return label if label in classes or label == UNKNOWN else OTHER
        seen = self.seen_labels[camera]  # the classes are not known yet: a fixed number of them
        if label not in seen and len(seen) < MAX_LABELS:
            seen.add(label)
        return label if label in seen else OTHER

    # ---- read by render and health (with the lock held) ---------------------------------------

    def names(self) -> list[str]:
        """Every component: the expected ones first, then any other heard on the bus."""
        return list(dict.fromkeys([*self.expected, *self.children, *self.components]))

    def silence(self) -> float:
        """How long a component may go unheard and still count as up."""
        return SILENT_INTERVALS * self.status_interval
