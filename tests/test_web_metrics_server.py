"""/metrics and /healthz over HTTP: the config's defaults, a real uvicorn (a taken port, a
prompt stop, the bus read), and a running `sightd run` scraped through a worker restart:
the restart counter rises and /healthz goes 503 and back to 200."""

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
from prometheus_client.parser import text_string_to_metric_families
from test_web_metrics import all_online, clock, state  # noqa: F401 (fixtures)

from sightd.config import HttpConfig, SightdConfig, load_config, validate
from sightd.daemon.supervisor import pipeline_specs
from sightd.errors import SightdError
from sightd.process import Runtime
from sightd.protocol import pack_message, status_body
from sightd.transport import bind_publisher
from sightd.web.server import HttpServer, bind_listen, create_app, run_http

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


def test_the_server_answers_over_http_and_stops_promptly(state):  # noqa: F811
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
