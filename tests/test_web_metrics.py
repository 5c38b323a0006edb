"""/metrics and /healthz: what synthetic bus messages render to, a real server, `sightd run`.

The unit tests feed BusState the messages the bus carries and read what a scrape would; the
server tests talk HTTP to a real uvicorn; the slow one scrapes a running `sightd run`, kills its
worker and watches the restart counter rise and /healthz go 503 and back to 200.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import zmq
from conftest import free_port, wait_for
from daemon_support import SightdRun, colour_video
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sightd.config import HttpConfig, SightdConfig, load_config, validate
from sightd.daemon.supervisor import pipeline_specs
from sightd.errors import SightdError
from sightd.process import Runtime
from sightd.protocol import pack_message, status_body
from sightd.transport import bind_publisher
from sightd.web.metrics import BUCKETS, OTHER, BusState, registry_for
from sightd.web.server import HttpServer, bind_listen, create_app, run_http

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
    healthy, report = state.health()
    assert not healthy
    assert any(r.startswith("capture:cam0:") for r in report["reasons"]), report


# ---- health ----------------------------------------------------------------------------------


def test_healthy_only_while_every_component_is_online_and_heard(state, clock):
    # given nothing heard yet: unhealthy, each missing component named
    healthy, report = state.health()
    assert not healthy and report["status"] == "unavailable"
    assert "subscriber:print: not heard from (listening for 0.0 s)" in report["reasons"]
    # when every expected component says online
    all_online(state)
    healthy, report = state.health()
    assert healthy, report
    assert report["status"] == "ok" and report["components"]["infer"]["state"] == "online"
    # when a capture is reconnecting, it says why
    status(state, "capture:cam0", "reconnecting", reason="cannot open rtsp://cam/door")
    healthy, report = state.health()
    assert report["reasons"] == ["capture:cam0: reconnecting: cannot open rtsp://cam/door"]
    # and when it was not heard from for more than 3 status intervals (1.5 s here)
    status(state, "capture:cam0")
    clock.now += 1.0
    all_online(state, but="capture:cam0")
    clock.now += 1.0  # the capture's last status is now 2 s old
    healthy, report = state.health()
    assert not healthy
    assert report["reasons"][0].startswith("capture:cam0: not heard from for 2.0 s")


def test_a_given_up_or_restarting_child_is_unhealthy(state):
    all_online(state)
    crashed = {
        "state": "backoff",
        "pid": None,
        "restarts": 1,
        "last_failure": "exited with code -9",
    }
    children = {
        "capture:cam0": {"state": "running", "pid": 100, "restarts": 0},
        "infer": crashed,
        "subscriber:print": {"state": "given-up", "restarts": 5, "last_failure": "boom"},
    }
    status(state, "supervisor", children=children, given_up=["subscriber:print"])
    healthy, report = state.health()
    assert not healthy
    assert report["reasons"] == [
        "infer: restarting (last failure: exited with code -9)",
        "subscriber:print: given up after 5 restarts (last failure: boom)",
    ]
    assert value(state, "sightd_component_given_up", component="subscriber:print") == 1


def test_a_restarted_child_is_unhealthy_until_it_says_online_again(state):
    all_online(state)
    assert state.health()[0]
    # when the supervisor reports the worker under a new pid, one restart more
    children = {
        "capture:cam0": {"state": "running", "pid": 100, "restarts": 0},
        "infer": {"state": "running", "pid": 555, "restarts": 1, "last_failure": "killed"},
        "subscriber:print": {"state": "running", "pid": 102, "restarts": 0},
    }
    status(state, "supervisor", children=children, given_up=[])
    healthy, report = state.health()
    assert report["reasons"] == ["infer: restarted (last failure: killed); not online since"]
    status(state, "infer", "starting")
    assert state.health()[1]["reasons"] == ["infer: starting"]
    # then online again: healthy
    status(state, "infer")
    assert state.health()[0]


def test_this_server_never_judges_itself(state):
    all_online(state)
    children = {"http": {"state": "running", "pid": 7, "restarts": 0}}
    status(state, "supervisor", children=children, given_up=[])
    healthy, report = state.health()
    assert healthy, report
    assert "http" not in report["components"]


# ---- config and supervisor -------------------------------------------------------------------


def test_http_config_defaults_to_loopback_and_names_a_bad_listen():
    assert SightdConfig().http.listen == "127.0.0.1:8765" and SightdConfig().http.enabled
    assert validate(HttpConfig, {"listen": "[::1]:9000"}).listen == "[::1]:9000"
    with pytest.raises(SightdError, match=r"^http\.listen: expected host:port"):
        validate(HttpConfig, {"listen": "8765"}, prefix="http")
    with pytest.raises(SightdError, match=r"^http\.listen: port must be a number"):
        validate(HttpConfig, {"listen": "localhost:99999"}, prefix="http")


def test_sightd_run_starts_the_server_with_the_subscribers_unless_disabled():
    spec = {s.name: s for s in pipeline_specs(SightdConfig())}["http"]
    assert (spec.target, spec.args, spec.group) == ("sightd.web.server:run_http", (), "subscribers")
    off = SightdConfig.model_validate({"http": {"enabled": False}})
    assert "http" not in {s.name for s in pipeline_specs(off)}


# ---- a real server ---------------------------------------------------------------------------


def test_a_taken_port_is_one_line_naming_the_address():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(SightdError) as error:
            bind_listen(listen)
    message = str(error.value)
    assert message.startswith(f"cannot serve HTTP on {listen}: ") and "\n" not in message
    assert "http.listen" in message


def test_the_server_answers_over_http_and_stops_promptly(state):
    # given a server with a client holding a keep-alive connection
    port = free_port()
    server = HttpServer(create_app(state), bind_listen(f"127.0.0.1:{port}"))
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            response = wait_for(lambda: _get(client, "/healthz"), 10, "the server")
            assert response.status_code == 503
            assert "not heard from" in response.json()["reasons"][0]
            all_online(state)
            response = client.get("/healthz")
            assert response.status_code == 200 and response.json()["status"] == "ok"
            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain")
            assert 'sightd_component_up{component="infer"} 1.0' in metrics.text
            openmetrics = client.get(
                "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
            assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
            assert openmetrics.text.rstrip().endswith("# EOF")
            # when it is stopped
            began = time.monotonic()
            server.stop()
            # then it stops within a second or two, the open connection notwithstanding
            assert time.monotonic() - began < 3.0
            assert not server.alive
    finally:
        server.stop()


def _get(client: httpx.Client, path: str):
    with contextlib.suppress(httpx.TransportError):
        return client.get(path)
    return None


def test_run_http_reads_the_bus_and_stops_on_runtime_stop(config_file):
    # given a config, and a worker's labels socket on which status and labels are published
    port = free_port()
    config = load_config(config_file(http={"listen": f"127.0.0.1:{port}"}))
    pub = bind_publisher(config.transport.labels, config.transport)
    runtime = Runtime("http")
    beats = []
    runtime.beat = lambda: beats.append(time.monotonic())
    thread = threading.Thread(target=run_http, args=(config, runtime), daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            wait_for(lambda: _get(client, "/metrics"), 20, "the server")

            def published() -> float | None:
                body = status_body("capture:cam0", "online", frames_out=42)
                pub.send_multipart(pack_message("status", "capture:cam0", body), zmq.NOBLOCK)
                text = client.get("/metrics").text
                return 'sightd_frames_published_total{camera="cam0"} 42.0' in text

            # when a status message is published (again until the slow joiner has joined)
            wait_for(published, 20, "the status figure in /metrics")
            # then it shows; /healthz waits for the rest of the pipeline
            health = client.get("/healthz").json()
            assert health["components"]["capture:cam0"]["ok"]
            assert any(r.startswith("infer: not heard from") for r in health["reasons"])
        # and runtime.stop ends it within a few seconds, having beaten at least every second
        runtime.stop.set()
        thread.join(5.0)
        assert not thread.is_alive()
        assert max(b - a for a, b in zip(beats, beats[1:], strict=False)) < 1.0
    finally:
        runtime.stop.set()
        thread.join(5.0)
        pub.close()


# ---- `sightd run`, scraped ---------------------------------------------------------------------


def Daemon(root: Path, checkpoint: Path) -> SightdRun:
    """`sightd run` on a looping video, a print subscriber, restarts allowed."""
    return SightdRun(
        root,
        checkpoint,
        colour_video(root / "colors.avi"),
        subscribers=[{"type": "print", "topics": ["event"]}],
        daemon={"max_restarts": 5, "restart_window": 60.0, "heartbeat_timeout": 10.0},
    )


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.slow
def test_sightd_run_serves_metrics_and_health_through_a_worker_restart(tmp_path, color_checkpoint):
    daemon = Daemon(tmp_path, color_checkpoint)
    url = f"http://127.0.0.1:{daemon.port}"
    try:
        with httpx.Client(base_url=url, timeout=5) as client:
            # given the daemon up: /healthz says ok once every component is online
            def healthy():
                response = _get(client, "/healthz")
                return response is not None and response.status_code == 200 and response

            health = wait_for(healthy, 90, "/healthz 200", daemon.tail).json()
            assert set(health["components"]) >= {"capture:cam0", "infer", "supervisor"}
            before = wait_for(
                lambda: (
                    (m := samples(client.get("/metrics").text)).get(
                        ("sightd_frames_published_total", (("camera", "cam0"),)), 0
                    )
                    > 0
                    and m
                ),
                30,
                "frames in /metrics",
                daemon.tail,
            )
            restarts = ("sightd_component_restarts_total", (("component", "infer"),))
            assert before[restarts] == 0
            assert before[("sightd_component_up", (("component", "infer"),))] == 1
            wait_for(lambda: _labelled(client.get("/metrics").text), 30, "labels", daemon.tail)
            model = [labels for name, labels in before if name == "sightd_model_info"]
            assert model and dict(model[0])["arch"] == "seed", model

            # when the worker is killed (its pid from the supervisor's status, via /healthz's
            # source: the bus)
            pid = _worker_pid(daemon)
            os.kill(pid, signal.SIGKILL)

            # then /healthz goes 503 naming the worker, and back to 200
            def unhealthy():
                response = _get(client, "/healthz")
                return response is not None and response.status_code == 503 and response

            down = wait_for(unhealthy, 20, "/healthz 503", daemon.tail).json()
            assert any(r.startswith("infer: ") for r in down["reasons"]), down
            wait_for(healthy, 60, "/healthz 200 again", daemon.tail)
            # and the restart counter rose, while no counter went down
            after = samples(client.get("/metrics").text)
            assert after[restarts] >= 1, daemon.tail()
            for key, old in before.items():
                if key[0].endswith("_total"):
                    assert after.get(key, 0) >= old, key
    finally:
        daemon.kill()


def _labelled(text: str) -> bool:
    """Labels of cam0 counted, and the print subscriber's deliveries reported."""
    found = samples(text)
    labels = sum(v for (name, labels), v in found.items() if name == "sightd_labels_total")
    delivered = ("sightd_subscriber_deliveries_total", (("subscriber", "print"),))
    return labels > 0 and delivered in found


def _worker_pid(daemon: Daemon) -> int:
    from sightd.client import subscribe

    config = load_config(daemon.config_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for message in subscribe("status", config=config, timeout=2):
            pid = message.get("children", {}).get("infer", {}).get("pid")
            if message.get("component") == "supervisor" and isinstance(pid, int):
                return pid
    raise AssertionError(f"no supervisor status with the worker's pid\n{daemon.tail()}")
