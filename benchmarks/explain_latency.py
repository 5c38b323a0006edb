"""Time from a Grad-CAM request to its overlay, on the CPU (issue 12's Explain figure).

For each model (`seed` at 64 px, `resnet18` at 128 px; random weights: the time does not depend
on what they learnt), in this one process:

- explain: Explainer.explain on a 640x480 frame (forward and backward pass, the map, the
  overlay over the 480x480 centre square), beside the served Classifier.predict of the same
  frame (the worker's forward pass) for scale;
- request: POST /api/explain/cam0 through starlette's TestClient against the explain routes,
  with a camera publishing 640x480 JPEGs at --fps on the bus: subscribing, waiting for the next
  frame, two decodes, the explanation and the PNG, i.e. a click on the console's button to the
  overlay, less the browser's share. Requests come at random moments between two frames, as
  clicks do, so the wait for a frame averages half an interval. The first request, which loads
  the model, is reported on its own.

Each figure is the median and 90th percentile of --calls calls' wall time after two warm-up
calls, and their mean CPU time (of the whole process: on a busy machine the wall time is
mostly waiting for a core, the CPU time is what a call costs).
Usage: python benchmarks/explain_latency.py [--calls 20] [--fps 10] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MODELS = [("seed", 64), ("resnet18", 128)]
CLASSES = ["a", "b", "c", "d"]


def camera_frame(rng) -> np.ndarray:
    """A camera-like 640x480 frame: a lit gradient, sensor noise, an object."""
    light = np.linspace(60, 200, 640, dtype=np.float32)[None, :, None]
    noise = rng.normal(0, 6, (480, 640, 3)).astype(np.float32)
    frame = np.clip(light + noise, 0, 255).astype(np.uint8)
    frame[100:200, 300:400] = (40, 40, 230)
    return frame


def write_model(folder: Path, arch: str, size: int) -> Path:
    from sightd.checkpoint import ModelInfo, save_checkpoint
    from sightd.model import create_model

    path = folder / f"{arch}.safetensors"
    info = ModelInfo(arch, CLASSES, size, [0.5] * 3, [0.5] * 3)
    save_checkpoint(path, create_model(arch, len(CLASSES)).eval(), info)
    return path


def timed(call, count: int, before=None) -> tuple[float, float, float]:
    """(median, 90th percentile) of count calls' wall time and their mean CPU time (this
    process's, every thread), in milliseconds, after two warm-up calls; `before` runs untimed
    ahead of each. The CPU time is what a call costs whatever else the cores are doing."""
    for _ in range(2):
        call()
    times, cpu = [], 0.0
    for _ in range(count):
        if before is not None:
            before()
        started, started_cpu = time.perf_counter(), time.process_time()
        call()
        times.append(1000 * (time.perf_counter() - started))
        cpu += 1000 * (time.process_time() - started_cpu)
    return statistics.median(times), statistics.quantiles(times, n=10)[-1], cpu / count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def publishing(config, fps: float):
    """cam0 on the bus: one 640x480 JPEG frame, encoded once, sent at fps until the block ends
    (so the request's CPU time holds no camera's encoding)."""
    import msgpack

    from sightd.protocol import pack_frame
    from sightd.transport import bind_publisher

    sock = bind_publisher(config.camera_endpoint("cam0"), config.transport)
    stop = threading.Event()
    topic, header, payload = pack_frame("cam0", 0, camera_frame(np.random.default_rng(1)), 0.0)
    header = msgpack.unpackb(header)

    def publish() -> None:
        seq = 0
        while not stop.is_set():
            fresh = msgpack.packb({**header, "seq": seq, "captured_at": time.time()})
            sock.send_multipart([topic, fresh, payload])
            seq += 1
            stop.wait(1 / fps)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def request_times(model: Path, fps: float, calls: int, threads: int) -> tuple[float, tuple]:
    """(the first request's ms, (median, p90) of the later ones) against the explain routes."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from sightd.config import SightdConfig
    from sightd.web.explain_routes import explain_routes

    frames = f"tcp://127.0.0.1:{free_port()}"
    config = SightdConfig.model_validate(
        {"model": {"path": str(model), "threads": threads}, "transport": {"frames": frames}}
    )
    with TestClient(Starlette(routes=explain_routes(config))) as client, publishing(config, fps):

        def post() -> None:
            response = client.post("/api/explain/cam0")
            assert response.status_code == 200, response.text

        started = time.perf_counter()
        post()
        first = 1000 * (time.perf_counter() - started)
        # A click comes at any moment between two frames; back-to-back requests would not (each
        # would start just after a frame and wait a whole interval for the next).
        rng = np.random.default_rng(2)
        return first, timed(post, calls, before=lambda: time.sleep(rng.uniform(0, 1 / fps)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--fps", type=float, default=10.0, help="the camera's frame rate")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads, as model.threads (0: torch's default)"
    )
    args = parser.parse_args()

    import torch

    from sightd.classifier import Classifier
    from sightd.explain.gradcam import Explainer

    threads = args.threads or torch.get_num_threads()
    print(
        f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; camera at {args.fps:g} fps; "
        f"median / p90 wall and mean CPU of {args.calls} calls, ms"
    )
    frame = camera_frame(np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as folder:
        for arch, size in MODELS:
            model = write_model(Path(folder), arch, size)
            explainer = Explainer(model, "cpu", args.threads)
            served = Classifier.load(model, "cpu", threads=args.threads)
            explain = timed(lambda e=explainer: e.explain(frame), args.calls)
            forward = timed(lambda s=served: s.predict([frame]), args.calls)
            first, request = request_times(model, args.fps, args.calls, args.threads)
            print(
                f"{arch} {size} px: explain {explain[0]:.1f} / {explain[1]:.1f}, CPU "
                f"{explain[2]:.1f}; request {request[0]:.1f} / {request[1]:.1f}, CPU "
                f"{request[2]:.1f} (first {first:.0f}); served forward pass {forward[0]:.1f} / "
                f"{forward[1]:.1f}, CPU {forward[2]:.1f}"
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
