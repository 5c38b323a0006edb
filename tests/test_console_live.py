"""The console's live parts: the hub (what a page paints and hears) and the frame relay.

The hub is fed bus messages as the HTTP component's reader feeds them; the relay is served by a
real uvicorn and fed by a real ZeroMQ publisher on the camera's frames endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import cv2
import httpx
import numpy as np
import pytest
import yaml
import zmq
from conftest import color_frame, free_port, wait_for

from sightd.config import SightdConfig
from sightd.protocol import pack_frame
from sightd.transport import bind
from sightd.web.console import _events, console_routes
from sightd.web.hub import EVENTS, QUEUE, Hub, checkpoint_card
from sightd.web.metrics import BusState
from sightd.web.relay import Relay
from sightd.web.server import HttpServer, bind_listen, create_app


def label(hub: Hub, camera: str, name: str, scores: dict[str, float], seq: int = 1) -> None:
    now = time.time()
    body = {"camera": camera, "seq": seq, "captured_at": now - 0.01, "inferred_at": now}
    hub.feed(
        "label",
        camera,
        {**body, "label": name, "confidence": max(scores.values()), "scores": scores},
    )


def event(hub: Hub, camera: str, name: str, previous: str | None, n: int = 0) -> None:
    body = {"camera": camera, "label": name, "previous": previous, "confidence": 0.9}
    hub.feed("event", camera, {**body, "at": 1_700_000_000.0 + n, "snapshot": f"{camera}-{n}.jpg"})


# ---- the hub -----------------------------------------------------------------------------------


def test_the_snapshot_holds_each_camera_s_label_scores_and_stable_label():
    hub = Hub(["cam0", "cam1"], 0.5)
    event(hub, "cam0", "red", None)
    label(hub, "cam0", "unknown", {"red": 0.41, "blue": 0.35, "green": 0.24})
    label(hub, "elsewhere", "red", {"red": 1.0})  # not a camera of the config
    state = hub.snapshot()
    cam0 = state["labels"]["cam0"]
    assert cam0["label"] == "unknown" and cam0["scores"]["red"] == 0.41
    assert cam0["stable"] == "red" and state["stable"] == {"cam0": "red"}
    assert set(state["labels"]) == {"cam0"}


def test_the_timeline_is_newest_first_and_bounded():
    hub = Hub(["cam0"], 0.5)
    for n in range(EVENTS + 50):
        event(hub, "cam0", "red" if n % 2 else "blue", "blue" if n % 2 else "red", n)
    events = hub.snapshot()["events"]
    assert len(events) == EVENTS
    assert events[0]["snapshot"] == f"cam0-{EVENTS + 49}.jpg"
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)


def test_components_supervisor_view_and_a_status_heard_twice():
    hub = Hub(["cam0"], 0.5)
    body = {
        "component": "capture:cam0",
        "state": "reconnecting",
        "at": 10.0,
        "reason": "cannot open x",
    }
    hub.feed("status", "capture:cam0", body)
    hub.feed("status", "capture:cam0", {**body, "state": "online", "at": 9.0})  # older: skipped
    children = {"infer": {"state": "given-up", "pid": None, "restarts": 5, "last_failure": "boom"}}
    hub.feed(
        "status",
        "supervisor",
        {"state": "online", "at": 11.0, "children": children, "given_up": ["infer"]},
    )
    state = hub.snapshot()
    capture = next(c for c in state["components"] if c["name"] == "capture:cam0")
    assert capture["state"] == "reconnecting" and capture["reason"] == "cannot open x"
    assert state["children"]["infer"] == {
        "process": "given-up",
        "restarts": 5,
        "last_failure": "boom",
    }
    assert state["given_up"] == ["infer"]


def test_the_model_card_joins_the_worker_s_status_and_the_checkpoint_s_own_metadata(
    color_checkpoint,
):
    digest = hashlib.sha256(color_checkpoint.read_bytes()).hexdigest()[:12]
    hub = Hub(["cam0"], 0.5, str(color_checkpoint))
    model = {
        "name": f"seed@{digest}",
        "arch": "seed",
        "digest": digest,
        "classes": ["blue", "green", "red"],
        "engine": "onnxruntime",
        "device": "cpu",
    }
    hub.feed("status", "infer", {"state": "online", "at": 1.0, "model": model})
    card = hub.snapshot()["model"]
    assert card["arch"] == "seed" and card["classes"] == ["blue", "green", "red"]
    assert card["engine"] == "onnxruntime" and card["device"] == "cpu"
    assert card["test_accuracy"] == 1.0 and card["temperature"] == 1.0 and not card["calibrated"]
    assert card["created_at"] > 1_600_000_000 and card["file_matches"]
    # a model file that is not the one served says so
    assert checkpoint_card(str(color_checkpoint), "000000000000")["file_matches"] is False
    # and a named worker's status (workers: in the config, the child infer:<name>) is a
    # worker's too: its model card and stable labels reach the page
    hub = Hub(["cam0"], 0.5, str(color_checkpoint))
    labels = {"cam0": "red"}
    hub.feed("status", "infer:a", {"state": "online", "at": 1.0, "model": model, "labels": labels})
    snapshot = hub.snapshot()
    assert snapshot["model"]["classes"] == ["blue", "green", "red"]
    assert snapshot["stable"] == {"cam0": "red"}


@contextlib.contextmanager
def running_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_page_that_stops_reading_loses_its_oldest_messages_and_never_blocks_the_reader():
    hub = Hub(["cam0"], 0.5)
    with running_loop() as loop:
        # given a page whose stream is open but not read
        stream = _events(hub)
        asyncio.run_coroutine_threadsafe(stream.__anext__(), loop).result(5)  # retry: ...
        # when the bus delivers many more labels than its queue holds
        began = time.monotonic()
        for seq in range(QUEUE * 4):
            label(hub, "cam0", "red", {"red": 0.9, "blue": 0.1}, seq)
        fed_in = time.monotonic() - began
        subscriber = next(iter(hub.subscribers))
        wait_for(lambda: subscriber.dropped == QUEUE * 3, 5, "the drops")
        # then the reader never waited, the queue stayed bounded, the losses were counted
        assert fed_in < 1.0
        assert (
            subscriber.queue.qsize() == QUEUE
            and hub.figures()["page_messages_dropped"] == QUEUE * 3
        )
        # and the page is told to fetch the snapshot, then gets the newest messages kept
        first = asyncio.run_coroutine_threadsafe(stream.__anext__(), loop).result(5)
        assert first == f"event: resync\ndata: {QUEUE * 3}\n\n"
        kept = asyncio.run_coroutine_threadsafe(stream.__anext__(), loop).result(5)
        assert f'"seq": {QUEUE * 3}' in kept
        asyncio.run_coroutine_threadsafe(stream.aclose(), loop).result(5)
    assert not hub.subscribers


# ---- the frame relay ---------------------------------------------------------------------------


@contextlib.contextmanager
def relay_server(config: SightdConfig) -> Iterator[str]:
    hub, relay = Hub([c.name for c in config.cameras], 0.5), Relay(config)
    app = create_app(BusState(0.5), console_routes(config, hub, relay))
    port = free_port()
    server = HttpServer(app, bind_listen(f"127.0.0.1:{port}"))
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        relay.close()
        server.stop()


def camera_config(encoding: str = "jpeg") -> SightdConfig:
    frames = f"tcp://127.0.0.1:{free_port()}"
    return SightdConfig.model_validate(
        {"cameras": [{"name": "cam0", "encoding": encoding}], "transport": {"frames": frames}}
    )


class Publisher:
    """A capture stand-in: an XPUB socket on the frames endpoint, which also hears every
    (un)subscription, so a test sees whether anyone subscribed to the frames."""

    def __init__(self, config: SightdConfig, encoding: str = "jpeg"):
        self.sock = bind(zmq.XPUB, config.transport.frames, config.transport)
        self.encoding, self.seq = encoding, 0
        self.frame = color_frame("red", (48, 64))

    def send(self) -> list[bytes]:
        self.seq += 1
        parts = pack_frame("cam0", self.seq, self.frame, time.time(), self.encoding)
        self.sock.send_multipart(parts, zmq.NOBLOCK)
        return parts

    def subscriptions(self, timeout: float = 0.0) -> list[bytes]:
        heard = []
        while self.sock.poll(timeout * 1000):
            heard.append(self.sock.recv())
            timeout = 0.0
        return heard


class Parts:
    """The JPEGs of an MJPEG body, one at a time, from an httpx byte iterator."""

    def __init__(self, response: httpx.Response):
        self.chunks, self.buffer = response.iter_raw(), b""

    def next(self) -> bytes:
        while True:
            start = self.buffer.find(b"Content-Length: ")
            end = self.buffer.find(b"\r\n\r\n", start)
            if start >= 0 and end >= 0:
                length = int(self.buffer[start + 16 : end])
                if len(self.buffer) >= end + 4 + length:
                    jpeg = self.buffer[end + 4 : end + 4 + length]
                    self.buffer = self.buffer[end + 4 + length :]
                    return jpeg
            self.buffer += next(self.chunks)


def test_the_relay_sends_the_bus_s_jpeg_bytes_and_subscribes_only_while_watched():
    config = camera_config()
    publisher = Publisher(config)
    with relay_server(config) as url:
        # given no viewer: nobody subscribed to the camera's frames
        assert publisher.subscriptions(timeout=0.5) == []
        with httpx.stream("GET", f"{url}/stream/cam0.mjpg", timeout=10) as response:
            # when a viewer opens the stream, the relay subscribes
            assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
            assert publisher.subscriptions(timeout=5) == [b"\x01frame.cam0"]
            stop = threading.Event()
            sent: list[bytes] = []

            def publish():
                while not stop.is_set():
                    sent.append(publisher.send()[2])
                    time.sleep(0.05)

            feeder = threading.Thread(target=publish, daemon=True)
            feeder.start()
            try:
                # then the viewer gets the very bytes published: not decoded, not re-encoded
                jpeg = Parts(response).next()
            finally:
                stop.set()
                feeder.join()
            assert jpeg in sent
        # and when the viewer goes, the relay unsubscribes
        assert publisher.subscriptions(timeout=5) == [b"\x00frame.cam0"]
    publisher.sock.close()


def test_a_bgr24_camera_is_encoded_to_jpeg_for_its_viewers():
    config = camera_config("bgr24")
    publisher = Publisher(config, "bgr24")
    with (
        relay_server(config) as url,
        httpx.stream("GET", f"{url}/stream/cam0.mjpg", timeout=10) as response,
    ):
        publisher.subscriptions(timeout=5)
        feeder = _keep_sending(publisher)
        try:
            jpeg = Parts(response).next()
        finally:
            feeder.set()
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (48, 64, 3) and abs(int(image[..., 2].mean()) - 210) < 20  # red
    publisher.sock.close()


def _keep_sending(publisher: Publisher) -> threading.Event:
    stop = threading.Event()

    def run():
        while not stop.is_set():
            publisher.send()
            time.sleep(0.05)

    threading.Thread(target=run, daemon=True).start()
    return stop


def test_a_viewer_that_stops_reading_never_slows_another():
    config = camera_config()
    publisher = Publisher(config)
    publisher.frame = color_frame("red", (480, 640))  # ~100 KB frames: the stalled socket fills
    with relay_server(config) as url:
        host, port = url.removeprefix("http://").split(":")
        # given a viewer that connects and never reads
        stalled = socket.create_connection((host, int(port)))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET /stream/cam0.mjpg HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        publisher.subscriptions(timeout=5)
        feeder = _keep_sending(publisher)
        try:
            time.sleep(2.0)  # long enough for its buffers to fill: the relay's send waits on it
            # when another viewer watches, it still gets frames at the camera's pace
            with httpx.stream("GET", f"{url}/stream/cam0.mjpg", timeout=10) as response:
                parts = Parts(response)
                parts.next()
                began = time.monotonic()
                for _ in range(10):
                    parts.next()
                took = time.monotonic() - began
        finally:
            feeder.set()
            stalled.close()
    assert took < 3.0, f"10 frames took {took:.1f} s beside a stalled viewer (20 fps published)"
    publisher.sock.close()


def test_an_unknown_camera_is_404():
    config = camera_config()
    with relay_server(config) as url:
        assert httpx.get(f"{url}/stream/nope.mjpg").status_code == 404


@pytest.mark.parametrize("path", ["/", "/static/console.js", "/static/console.css"])
def test_the_page_and_its_files_ship_in_the_package(path):
    with relay_server(camera_config()) as url:
        assert httpx.get(f"{url}{path}").status_code == 200


def test_sightd_web_serves_the_console_alone_and_stops_on_sigterm(config_file):
    # given a config (no pipeline running: the server hosts the status bus itself)
    path = config_file()
    listen = yaml.safe_load(path.read_text())["http"]["listen"]
    process = subprocess.Popen(
        [sys.executable, "-m", "sightd", "web", "-c", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # when it is up, the page answers and the status bus carries the server's own status
        def page() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"http://{listen}/", timeout=2).status_code == 200
            return False

        wait_for(page, 60, "the console page")

        def heard_itself() -> bool:
            state = httpx.get(f"http://{listen}/api/state", timeout=2).json()
            return any(c["name"] == "http" and c["state"] == "online" for c in state["components"])

        wait_for(heard_itself, 20, "the server's own status on the bus it hosts")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    # then it logged where the console is, and a stop is a clean exit
    assert f"console: http://{listen}/" in stderr
    assert process.returncode == 0, stderr
