"""/metrics: a BusState rendered as Prometheus metric families, at each scrape."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from sightd.web.metrics.state import COUNTERS, STATES, UNKNOWN, BusState, count


def families(state: BusState) -> list:
    """Every metric family, rendered from one consistent moment of the state."""
    with state.lock:
        now = state.clock()
        return [
            *_counters(state),
            *_component_gauges(state, now),
            *_subscriber_gauges(state),
            *_model_info(state),
            *_histograms(state),
        ]


def _counters(state: BusState) -> Iterator[CounterMetricFamily]:
    totals: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
    for component in state.components.values():
        for (metric, labels), value in component.figures.totals.items():
            totals[metric][labels] = totals[metric].get(labels, 0.0) + value  # workers: all
    for (camera, label), n in state.labels.items():
        totals["sightd_labels"][(camera, label)] = n
    for (camera, label), n in state.events.items():
        totals["sightd_events"][(camera, label)] = n
    for metric, (documentation, names) in COUNTERS.items():
        family = CounterMetricFamily(metric, documentation, labels=names)
        for labels, value in sorted(totals[metric].items()):
            family.add_metric(labels, value)
        yield family


def _component_gauges(state: BusState, now: float) -> Iterator[GaugeMetricFamily]:
    up = GaugeMetricFamily(
        "sightd_component_up",
        "1 when the component's status was heard within 3 status intervals.",
        labels=("component",),
    )
    said_state = GaugeMetricFamily(
        "sightd_component_state",
        "1 for the state the component's last status said (unknown: nothing heard yet).",
        labels=("component", "state"),
    )
    age = GaugeMetricFamily(
        "sightd_component_status_age_seconds",
        "Seconds since the component's last status.",
        labels=("component",),
    )
    given_up = GaugeMetricFamily(
        "sightd_component_given_up",
        "1 when the supervisor gave up restarting the component.",
        labels=("component",),
    )
    for name in state.names():
        component = state.components.get(name)
        heard = component is not None and component.heard_at is not None
        silent = now - component.heard_at if heard else math.inf
        up.add_metric((name,), float(silent <= state.silence()))
        said = component.body.get("state") if heard else None
        said = said if said in STATES else UNKNOWN
        for each in (*STATES, UNKNOWN):
            said_state.add_metric((name, each), float(each == said))
        if heard:
            age.add_metric((name,), round(silent, 3))
    for name, info in state.children.items():
        stopped = name in state.given_up or info.get("state") == "given-up"
        given_up.add_metric((name,), float(stopped))
    yield from (up, said_state, age, given_up)


def _subscriber_gauges(state: BusState) -> Iterator[GaugeMetricFamily]:
    queued = GaugeMetricFamily(
        "sightd_subscriber_queued_messages",
        "Messages waiting in the subscriber's queue.",
        labels=("subscriber",),
    )
    for name, component in sorted(state.components.items()):
        kind, _, suffix = name.partition(":")
        value = count(component.body.get("queued"))
        if kind == "subscriber" and suffix and value is not None:
            queued.add_metric((suffix,), value)
    yield queued


def _model_info(state: BusState) -> Iterator[InfoMetricFamily]:
    family = InfoMetricFamily("sightd_model", "The model the inference worker serves (always 1).")
    if state.model is not None:
        family.add_metric([], state.model)
    yield family


def _histograms(state: BusState) -> Iterator[HistogramMetricFamily]:
    for metric, documentation, histograms in (
        (
            "sightd_inference_duration_seconds",
            "Duration of the forward pass that classified the camera's frame (one batch "
            "for every camera's newest frame).",
            state.inference,
        ),
        (
            "sightd_capture_to_label_seconds",
            "Time from a frame's capture (captured_at) to its label (inferred_at).",
            state.latency,
        ),
    ):
        family = HistogramMetricFamily(metric, documentation, labels=("camera",))
        for camera, histogram in sorted(histograms.items()):
            family.add_metric((camera,), histogram.cumulative(), histogram.sum)
        yield family


class StateCollector(Collector):
    """Renders a BusState at every scrape."""

    def __init__(self, state: BusState) -> None:
        self.state = state

    def collect(self):
        return families(self.state)


def registry_for(state: BusState) -> CollectorRegistry:
    """A private registry (no process or platform metrics of this server) holding `state`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state))
    return registry
