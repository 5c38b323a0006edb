"""The webhook subscriber against a real local HTTP server: retries on 5xx with backoff, the
bearer token from the environment, no retry on 4xx, and a cooldown per label."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import wait_for
from subscriber_harness import Bus


@pytest.fixture
def server():
    """An HTTP server that records each request and answers with the next scripted status
    (200 once the script runs out)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            httpd.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            code = httpd.script.pop(0) if httpd.script else 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):  # keep test output quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.requests, httpd.script = [], []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_failed_post_is_retried_with_the_token_then_delivered(config_file, subscribers, server):
    # given a receiver that fails twice with 503, and a token in the environment
    server.script[:] = [503, 503]
    entry = {
        "type": "webhook",
        "url": server.url,
        "backoff": 0.05,
        "token_env": "SIGHTD_TEST_TOKEN",
        "headers": {"X-Source": "tests"},
    }
    path = config_file(subscribers=[entry])
    with Bus(path) as bus:
        subscribers.start(path, "webhook", env={"SIGHTD_TEST_TOKEN": "s3cret"})
        bus.wait_subscriptions(1)
        # when an event arrives
        bus.event("thumbs_up", previous="fist", confidence=0.97)
        # then the same JSON is posted three times, the last one succeeding
        wait_for(lambda: len(server.requests) == 3, what="three POSTs")
        status = bus.status_of("subscriber:webhook", lambda body: body["delivered"] == 1)
        assert (status["posts"], status["retries"], status["errors"]) == (1, 2, 0)
    first, last = server.requests[0], server.requests[-1]
    assert first["body"] == last["body"]
    assert last["path"] == "/hook"
    assert last["body"]["kind"] == "event" and last["body"]["label"] == "thumbs_up"
    assert last["body"]["previous"] == "fist" and last["body"]["confidence"] == 0.97
    assert last["headers"]["Authorization"] == "Bearer s3cret"
    assert last["headers"]["X-Source"] == "tests"
    assert last["headers"]["Content-Type"] == "application/json"


def test_a_refused_post_is_not_retried_and_the_cooldown_holds(config_file, subscribers, server):
    # given a receiver that refuses the first request, and a 30 s cooldown per label
    server.script[:] = [404]
    entry = {"type": "webhook", "url": server.url, "backoff": 0.05, "cooldown": 30}
    path = config_file(subscribers=[entry])
    with Bus(path) as bus:
        process = subscribers.start(path, "webhook")
        bus.wait_subscriptions(1)
        # when a, a again within the cooldown, then b arrive
        for label in ["a", "a", "b"]:
            bus.event(label)
        # then a was tried once (404: an error, no retry), its repeat skipped, and b delivered
        status = bus.status_of(
            "subscriber:webhook", lambda body: body["delivered"] + body["errors"] == 3
        )
        assert (status["errors"], status["retries"], status["skipped"]) == (1, 0, 1)
        assert [r["body"]["label"] for r in server.requests] == ["a", "b"]
        assert "HTTP 404" in process.err_path.read_text()


def test_a_missing_token_variable_is_a_one_line_error(config_file, subscribers, server):
    entry = {"type": "webhook", "url": server.url, "token_env": "SIGHTD_NO_SUCH_TOKEN"}
    path = config_file(subscribers=[entry])
    process = subscribers.start(path, "webhook")
    assert process.wait(10) == 1
    assert "Traceback" not in process.err_path.read_text()
    assert process.err_path.read_text().strip().splitlines()[-1] == (
        "Error: webhook: token_env names SIGHTD_NO_SUCH_TOKEN, which is not set; "
        "export SIGHTD_NO_SUCH_TOKEN=<token> or remove token_env"
    )


def test_unknown_is_posted_only_where_labels_name_it(config_file, subscribers, server):
    # given a webhook for any label and one whose labels name unknown, on the same receiver
    entries = [
        {"type": "webhook", "url": server.url + "/any"},
        {"type": "webhook", "url": server.url + "/unknown", "labels": ["unknown"]},
    ]
    path = config_file(subscribers=entries)
    with Bus(path) as bus:
        subscribers.start(path, "webhook.0")
        subscribers.start(path, "webhook.1")
        bus.wait_subscriptions(2)
        # when the stable label becomes unknown, then thumbs_up
        bus.event("unknown", previous="fist", confidence=0.3)
        bus.event("thumbs_up", previous="unknown")
        # then each receiver got exactly what its webhook is for
        wait_for(lambda: len(server.requests) == 2, what="two POSTs")
        done = bus.status_of(
            "subscriber:webhook.0", lambda body: body["received"] == 2 and body["busy_s"] == 0
        )
        assert done["delivered"] == 1
    posted = sorted((r["path"], r["body"]["label"]) for r in server.requests)
    assert posted == [("/hook/any", "thumbs_up"), ("/hook/unknown", "unknown")]
