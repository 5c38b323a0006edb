"""/metrics: what the bus's messages render to (counters over restarts, labels bounded,
histograms), read as a scrape would. Health is in test_web_metrics_health.py, the real
server and `sightd run` in test_web_metrics_server.py; both take the helpers here."""

from __future__ import annotations

import time

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sightd.protocol import status_body
from sightd.web.metrics import BUCKETS, OTHER, BusState, health, registry_for

EXPECTED = ["capture:cam0", "infer", "subscriber:print", "supervisor"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def state(clock):
    return BusState(0.5, expected=EXPECTED, cameras=["cam0", "cam1"], own="http", clock=clock)


def status(state: BusState, name: str, state_name: str = "online", **figures) -> None:
    """A status message as the bus delivers it (each one later than the last)."""
    status.at += 1.0
    body = {"v": 1, "component": name, "state": state_name, "at": status.at, **figures}
    state.feed("status", name, body)


status.at = 1_700_000_000.0


def label(state: BusState, camera: str, name: str, age: float = 0.02, **extra) -> None:
    now = time.time()
    body = {"camera": camera, "seq": 1, "captured_at": now - age, "inferred_at": now}
    state.feed("label", camera, {**body, "label": name, "confidence": 0.9, **extra})


def scrape(state: BusState) -> dict[str, dict]:
    """{family name: {"type": ..., "samples": {(sample name, sorted labels): value}}}."""
    text = generate_latest(registry_for(state)).decode()
    families = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
        families[family.name] = {"type": family.type, "samples": samples}
    return families


def value(state: BusState, sample: str, **labels) -> float | None:
    for family in scrape(state).values():
        found = family["samples"].get((sample, tuple(sorted(labels.items()))))
        if found is not None:
            return found
    return None


def all_online(state: BusState, but: str = "") -> None:
    """Every expected component says online (`but` that one)."""
    children = {}
    for pid, name in enumerate(EXPECTED[:3], start=100):
        children[name] = {"state": "running", "pid": pid, "restarts": 0}
    figures = {
        "capture:cam0": {"frames_out": 1},
        "infer": {"model": {"arch": "seed", "digest": "d1", "classes": ["a", "b"]}},
        "subscriber:print": {"delivered": 0},
        "supervisor": {"children": children, "given_up": []},
    }
    for name in EXPECTED:
        if name != but:
            status(state, name, **figures[name])


# ---- counters --------------------------------------------------------------------------------


def test_a_restarted_component_counts_on_from_where_it_was(state):
    # given a capture that published 10, then 15 frames
    status(state, "capture:cam0", frames_out=10)
    status(state, "capture:cam0", frames_out=15)
    assert value(state, "sightd_frames_published_total", camera="cam0") == 15
    # when it restarts (its figure starts again from 0) and counts 3, then 5
    status(state, "capture:cam0", frames_out=3)
    status(state, "capture:cam0", frames_out=5)
    # then the exported counter went on from 15 and never went down
    assert value(state, "sightd_frames_published_total", camera="cam0") == 20


def test_one_figure_going_down_restarts_every_figure_of_that_component(state):
    # given a worker whose per-camera figures grew
    cams = {"cam0": {"frames_in": 100, "dropped": 4, "stale": 2}}
    status(state, "infer", cameras=cams, decode_errors=1)
    # when it restarts: frames_in fell to 7, while stale (3) is above its old value (2)
    cams = {"cam0": {"frames_in": 7, "dropped": 0, "stale": 3}}
    status(state, "infer", cameras=cams, decode_errors=1)
    # then each figure of the new process counts in full, not only its rise
    assert value(state, "sightd_frames_received_total", camera="cam0") == 107
    assert value(state, "sightd_frames_dropped_total", camera="cam0", reason="stale") == 5
    assert value(state, "sightd_frames_dropped_total", camera="cam0", reason="superseded") == 4
    assert value(state, "sightd_worker_errors_total", reason="decode") == 2


def test_a_status_heard_twice_or_late_is_counted_once(state):
    body = status_body("capture:cam0", "online", frames_out=10)
    state.feed("status", "capture:cam0", body)
    state.feed("status", "capture:cam0", dict(body))  # heard on a second endpoint
    state.feed("status", "capture:cam0", {**body, "at": body["at"] - 5, "frames_out": 3})
    assert value(state, "sightd_frames_published_total", camera="cam0") == 10


def test_subscriber_and_supervisor_counters(state):
    status(state, "subscriber:webhook.1", received=9, delivered=7, errors=2, dropped=1, queued=3)
    children = {"infer": {"state": "running", "pid": 10, "restarts": 2}}
    status(state, "supervisor", children=children, given_up=[])
    assert value(state, "sightd_subscriber_deliveries_total", subscriber="webhook.1") == 7
    assert value(state, "sightd_subscriber_errors_total", subscriber="webhook.1") == 2
    assert value(state, "sightd_subscriber_messages_dropped_total", subscriber="webhook.1") == 1
    assert value(state, "sightd_subscriber_messages_received_total", subscriber="webhook.1") == 9
    assert value(state, "sightd_subscriber_queued_messages", subscriber="webhook.1") == 3
    assert value(state, "sightd_component_restarts_total", component="infer") == 2
    assert value(state, "sightd_component_given_up", component="infer") == 0


def test_named_workers_counters_add_up_and_each_feeds_the_model_info(state):
    # given two named workers (workers: a and b), each counting its own reloads and errors
    model = {"arch": "seed", "digest": "abc", "classes": ["x", "y"]}
    status(state, "infer:a", reloads=2, decode_errors=1, model=model)
    status(state, "infer:b", reloads=3, decode_errors=0, model=model)
    # then /metrics says the sum over the workers, and the model they serve
    assert value(state, "sightd_model_reloads_total") == 5
    assert value(state, "sightd_worker_errors_total", reason="decode") == 1
    assert state.model == {"arch": "seed", "digest": "abc", "classes": "x,y"}


# ---- labels, events, histograms --------------------------------------------------------------


def test_histograms_count_milliseconds_in_their_buckets(state):
    # given labels whose forward pass took 0.5 ms, 3 ms, 300 ms and 5 s
    for seconds in (0.0005, 0.003, 0.3, 5.0):
        label(state, "cam0", "a", age=seconds + 0.01, inference_s=seconds)
    # then each falls in the first bucket at or above it, and +Inf holds them all
    families = scrape(state)
    samples = families["sightd_inference_duration_seconds"]["samples"]
    assert families["sightd_inference_duration_seconds"]["type"] == "histogram"

    def bucket(le: str) -> float:
        return samples[
            ("sightd_inference_duration_seconds_bucket", (("camera", "cam0"), ("le", le)))
        ]

    bounds = ("0.001", "0.0025", "0.005", "0.25", "0.5", "2.0", "+Inf")
    assert [bucket(le) for le in bounds] == [1, 1, 2, 2, 3, 3, 4]
    assert samples[("sightd_inference_duration_seconds_count", (("camera", "cam0"),))] == 4
    total = samples[("sightd_inference_duration_seconds_sum", (("camera", "cam0"),))]
    assert total == pytest.approx(5.3035)
    assert BUCKETS[0] == 0.001 and BUCKETS[-1] == 2.0
    # and the capture-to-label latency was observed for each label too
    count = value(state, "sightd_capture_to_label_seconds_count", camera="cam0")
    assert count == 4


def test_labels_are_bounded_by_the_model_classes(state):
    # given the worker's status names its model's classes
    status(state, "infer", model={"arch": "seed", "digest": "ab12", "classes": ["cat", "dog"]})
    # when labels arrive: a class, unknown, and a value no class has
    for name in ("cat", "cat", "unknown", "ferret"):
        label(state, "cam0", name)
    state.feed("event", "cam0", {"camera": "cam0", "label": "dog", "at": time.time()})
    # then the counter has one series per class seen, unknown, and the rest as (other)
    assert value(state, "sightd_labels_total", camera="cam0", label="cat") == 2
    assert value(state, "sightd_labels_total", camera="cam0", label="unknown") == 1
    assert value(state, "sightd_labels_total", camera="cam0", label=OTHER) == 1
    assert value(state, "sightd_labels_total", camera="cam0", label="ferret") is None
    assert value(state, "sightd_events_total", camera="cam0", label="dog") == 1
    # and the model is described once
    info = {"arch": "seed", "digest": "ab12", "classes": "cat,dog"}
    assert value(state, "sightd_model_info", **info) == 1


def test_before_the_model_is_known_a_label_s_scores_bound_it(state):
    label(state, "cam0", "x", scores={"x": 0.9, "y": 0.1})
    label(state, "cam0", "z", scores={"x": 0.9, "y": 0.1})
    assert value(state, "sightd_labels_total", camera="cam0", label="x") == 1
    assert value(state, "sightd_labels_total", camera="cam0", label=OTHER) == 1


def test_cameras_not_in_the_config_are_not_exported(state):
    label(state, "intruder", "a")
    status(state, "capture:intruder", frames_out=5)
    text = generate_latest(registry_for(state)).decode()
    assert 'camera="intruder"' not in text


def test_every_name_follows_prometheus_conventions(state):
    # given every kind of message, with the figures the components send
    cams = {"cam0": {"frames_in": 3, "dropped": 1, "stale": 0, "labels": 2, "events": 1}}
    model = {"name": "seed@d", "arch": "seed", "digest": "d", "classes": ["a", "b"]}
    status(state, "capture:cam0", frames_captured=4, frames_out=3, fps=2.0, attempts=1, failures=0)
    status(state, "infer", cameras=cams, model=model, malformed=0, classify_errors=0, reloads=0)
    status(state, "subscriber:print", received=2, delivered=2, errors=0, dropped=0, queued=0)
    status(state, "supervisor", children={"infer": {"state": "running", "restarts": 0}})
    label(state, "cam0", "a", inference_s=0.004)
    state.feed("event", "cam0", {"camera": "cam0", "label": "a"})
    # when it is rendered and parsed back by prometheus_client's own parser
    families = scrape(state)
    # then every name is sightd_..., counters (only they) end in _total, durations in seconds
    for name, family in families.items():
        assert name.startswith("sightd_"), name
        for sample, labels in family["samples"]:
            assert sample.endswith("_total") == (family["type"] == "counter"), sample
            assert all(value not in sample for _, value in labels if len(value) > 2), sample
        if family["type"] == "histogram":
            assert name.endswith("_seconds"), name
    wanted = {
        "sightd_frames_captured",
        "sightd_frames_published",
        "sightd_frames_received",
        "sightd_frames_dropped",
        "sightd_labels",
        "sightd_events",
        "sightd_inference_duration_seconds",
        "sightd_capture_to_label_seconds",
        "sightd_subscriber_deliveries",
        "sightd_subscriber_errors",
        "sightd_subscriber_messages_dropped",
        "sightd_component_restarts",
        "sightd_component_given_up",
        "sightd_model_info",
        "sightd_component_up",
        "sightd_component_state",
    }
    assert wanted <= set(families), wanted - set(families)
    assert families["sightd_model_info"]["type"] == "gauge"  # the text format's info


def test_missing_and_mistyped_fields_are_skipped_not_fatal(state):
    # given messages with nothing but their topic, or figures of the wrong type
    for name in ("capture:cam0", "infer", "subscriber:print", "supervisor", "other"):
        state.feed("status", name, {})
    status(state, "infer", cameras=["cam0"], model=7, frames_in="many", malformed=float("nan"))
    status(state, "infer", cameras={"cam0": "x", 3: {}}, model={"classes": "a"})
    status(state, "supervisor", children={"infer": "up", "x": {"pid": "p"}}, given_up="all")
    status(state, "capture:cam0", None, frames_out=-3, attempts=True)
    state.feed("label", "cam0", {"label": 5, "captured_at": "then"})
    state.feed("label", "cam0", {"label": "a", "captured_at": "then", "inference_s": None})
    state.feed("event", "cam0", {"label": None})
    # then a scrape and a health check still answer, naming what is wrong
    scrape(state)
    healthy, report = health(state)
    assert not healthy
    assert any(r.startswith("capture:cam0:") for r in report["reasons"]), report
