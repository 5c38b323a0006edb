"""Scrape time of GET /metrics with 8 cameras and 5 subscribers, through a real HTTP request.

The HTTP server's state is fed in-process what the bus would carry for that pipeline: every
component's status (8 captures, the worker with its per-camera figures and a 10-class model, 5
subscribers, the supervisor with 15 children), a history of labels over all classes (so every
label series and histogram bucket exists) and events; while the scrapes run, a thread goes on
feeding labels at the pipeline's rate (8 cameras x --fps) and status every 2 s, as the bus
reader would. The server is the one `sightd run` starts (uvicorn, starlette); the client is
httpx on one keep-alive connection, as Prometheus scrapes. Prints the median, p90 and max of
--scrapes scrapes, the size of a scrape and its series, and the render time alone.
Usage: python benchmarks/metrics_scrape.py [--scrapes 200] [--cameras 8] [--subscribers 5]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import threading
import time

import httpx
from prometheus_client.exposition import generate_latest

from sightd.web.metrics import BusState, registry_for
from sightd.web.server import HttpServer, bind_listen, create_app

CLASSES = [f"class{i}" for i in range(10)]
SUBSCRIBERS = ["print", "log", "command", "webhook", "mqtt", "webhook.5", "log.6"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Pipeline:
    """What the bus carries for `cameras` cameras and `subscribers` subscribers."""

    def __init__(self, cameras: int, subscribers: int):
        self.cameras = [f"cam{i}" for i in range(cameras)]
        self.subscribers = [f"subscriber:{s}" for s in SUBSCRIBERS[:subscribers]]
        captures = [f"capture:{c}" for c in self.cameras]
        self.children = [*captures, "infer", *self.subscribers, "http"]
        self.state = BusState(
            2.0,
            expected=[*captures, "infer", *self.subscribers, "supervisor"],
            cameras=self.cameras,
            own="http",
        )
        self.round = 0
        self.rng = random.Random(0)

    def statuses(self) -> None:
        self.round += 1
        n, feed = self.round, self.state.feed
        for camera in self.cameras:
            figures = {"frames_captured": 10 * n, "frames_out": 10 * n, "fps": 5.0}
            feed("status", f"capture:{camera}", self._status(f"capture:{camera}", figures))
        cameras = {
            c: {"frames_in": 10 * n, "labels": 9 * n, "dropped": n, "stale": 0, "events": n}
            for c in self.cameras
        }
        model = {"name": "seed@abc", "arch": "seed", "digest": "abc", "classes": CLASSES}
        worker = {"cameras": cameras, "model": model, "frames_in": 80 * n, "malformed": 0}
        worker |= {"decode_errors": 0, "classify_errors": 0, "reloads": 0, "model_errors": 0}
        feed("status", "infer", self._status("infer", worker))
        for name in self.subscribers:
            figures = {"received": 9 * n, "delivered": 9 * n, "errors": 0, "dropped": 0}
            feed("status", name, self._status(name, {**figures, "queued": 0}))
        children = {
            name: {"state": "running", "pid": 1000 + i, "restarts": 0, "last_failure": ""}
            for i, name in enumerate(self.children)
        }
        supervisor = {"children": children, "given_up": []}
        feed("status", "supervisor", self._status("supervisor", supervisor))

    def _status(self, name: str, figures: dict) -> dict:
        return {"v": 1, "component": name, "state": "online", "at": time.time(), **figures}

    def label(self, camera: str) -> None:
        now, label = time.time(), self.rng.choice([*CLASSES, "unknown"])
        body = {"v": 1, "camera": camera, "seq": 1, "label": label, "confidence": 0.9}
        body |= {"captured_at": now - self.rng.uniform(0.002, 0.3), "inferred_at": now}
        body |= {"inference_s": self.rng.uniform(0.001, 0.05), "scores": {}}
        self.state.feed("label", camera, body)
        if self.rng.random() < 0.05:
            self.state.feed("event", camera, {"v": 1, "camera": camera, "label": label})


def live_feed(pipeline: Pipeline, fps: float, stop: threading.Event) -> None:
    """Labels at 8 cameras x fps and status every 2 s, until stopped."""
    next_status = time.monotonic() + 2.0
    while not stop.wait(1.0 / fps):
        for camera in pipeline.cameras:
            pipeline.label(camera)
        if time.monotonic() >= next_status:
            pipeline.statuses()
            next_status += 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--subscribers", type=int, default=5, choices=range(1, 8))
    parser.add_argument("--fps", type=float, default=5.0, help="labels per camera per second")
    args = parser.parse_args()

    pipeline = Pipeline(args.cameras, args.subscribers)
    for _ in range(3):
        pipeline.statuses()
    for _ in range(200):  # a history: every label and bucket of every camera has a count
        for camera in pipeline.cameras:
            pipeline.label(camera)
    port = free_port()
    server = HttpServer(create_app(pipeline.state), bind_listen(f"127.0.0.1:{port}"))
    server.start()
    stop = threading.Event()
    feeder = threading.Thread(target=live_feed, args=(pipeline, args.fps, stop), daemon=True)
    feeder.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            for _ in range(20):  # warm up
                client.get("/metrics")
            times = []
            for _ in range(args.scrapes):
                began = time.perf_counter()
                response = client.get("/metrics")
                response.raise_for_status()
                times.append(time.perf_counter() - began)
            body = response.text
    finally:
        stop.set()
        feeder.join()
        server.stop()

    registry = registry_for(pipeline.state)
    renders = []
    for _ in range(args.scrapes):
        began = time.perf_counter()
        generate_latest(registry)
        renders.append(time.perf_counter() - began)
    series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    times.sort()
    print(
        f"GET /metrics, {args.cameras} cameras, {args.subscribers} subscribers, "
        f"{len(CLASSES)} classes: {series} series, {len(body) / 1024:.0f} KiB"
    )
    print(
        f"{args.scrapes} scrapes: median {1000 * statistics.median(times):.2f} ms, "
        f"p90 {1000 * times[int(0.9 * len(times))]:.2f} ms, max {1000 * times[-1]:.2f} ms "
        f"(rendering alone: median {1000 * statistics.median(renders):.2f} ms)"
    )


if __name__ == "__main__":
    main()
