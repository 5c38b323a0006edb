"""Time from a click on the console's Grad-CAM button to the overlay drawn, on the CPU (issue 12).

For each model (`seed` at 64 px, `resnet18` at 128 px; random weights: the time does not depend
on what they learnt), in this one process:

- explain: Explainer.explain on a 640x480 frame (forward and backward pass, the map, the
  overlay over the 480x480 centre square), beside the served Classifier.predict of the same
  frame (the worker's forward pass) for scale;
- click to overlay: the console's real server (run_http, in a thread of this process) with a
  camera publishing 640x480 JPEGs at --fps on the bus, and the console page open in a headless
  chromium (Debian's, at $CHROMIUM or /usr/bin/chromium, driven by Playwright). A real mouse
  click on cam0's Grad-CAM button; the page itself times from the click event to the frame
  painted after the overlay PNG has loaded (a requestAnimationFrame after the <img>'s load):
  the POST, subscribing, waiting for the next frame, two decodes, the explanation, the PNG,
  the response and the browser's decode and paint. Clicks come at random moments between two
  frames, as a person's do, so the wait for a frame averages half an interval. The first
  click, which loads the model, is reported on its own.

Each figure is the median and 90th percentile of --calls calls' wall time after two warm-up
calls, with the mean CPU time of this process (every thread: the server, the camera thread,
Playwright's client; not chromium's) per call: on a busy machine the wall time is mostly
waiting for a core, the CPU time is what a call costs.
Usage: python benchmarks/explain_latency.py [--calls 20] [--fps 10] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
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


# The page times a click: from the click event to the first frame painted after the overlay's
# PNG has loaded. Armed before each click; the promise resolves with milliseconds.
ARM_JS = """() => {
  const card = document.querySelector('article.camera[data-camera="cam0"]');
  const button = card.querySelector(".actions button"), heat = card.querySelector("img.heat");
  heat.hidden = true;
  window.clicked = new Promise((resolve, reject) => {
    let began = null;
    button.addEventListener("click", () => { began = performance.now(); }, { once: true });
    heat.addEventListener("load", () => requestAnimationFrame(
      () => resolve(performance.now() - began)), { once: true });
    heat.addEventListener("error", () => reject(new Error("the overlay did not load")),
      { once: true });
    const note = card.querySelector(".actions .quiet");
    setTimeout(() => reject(new Error(`no overlay in 30 s: ${note.textContent}`)), 30000);
  });
}"""


@contextlib.contextmanager
def console(config):
    """The console's server (`sightd run`'s http component) on config.http.listen, in a
    thread of this process, until the block ends."""
    import httpx

    from sightd.process import Runtime
    from sightd.web.server import run_http

    runtime = Runtime("http")
    server = threading.Thread(target=run_http, args=(config, runtime), daemon=True)
    server.start()
    url = f"http://{config.http.listen}/"
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}healthz", timeout=2).status_code in (200, 503):
                break
        if time.monotonic() > deadline or not server.is_alive():
            raise SystemExit(f"the console did not come up on {url}")
        time.sleep(0.2)
    try:
        yield url
    finally:
        runtime.stop.set()
        server.join(10)


def click_times(model: Path, fps: float, calls: int, threads: int) -> tuple[float, tuple]:
    """(the first click's ms, (median, p90, CPU) of the later ones), clicks in chromium."""
    from playwright.sync_api import sync_playwright

    from sightd.config import SightdConfig

    names = ("frames", "labels", "status", "status_in")
    config = SightdConfig.model_validate(
        {
            "model": {"path": str(model), "threads": threads, "reload": False},
            "transport": {name: f"tcp://127.0.0.1:{free_port()}" for name in names},
            "http": {"listen": f"127.0.0.1:{free_port()}"},
            "subscribers": [],
        }
    )
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    with (
        console(config) as url,
        publishing(config, fps),
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(60_000)
        page.goto(url)
        button = page.locator('article.camera[data-camera="cam0"] .actions button')
        took: list[float] = []

        def click() -> None:
            button.wait_for()
            while button.is_disabled():  # until /api/state says Grad-CAM is served
                time.sleep(0.05)
            page.evaluate(ARM_JS)
            button.click()
            took.append(page.evaluate("window.clicked"))

        click()
        first = took[-1]
        # A click comes at any moment between two frames; back-to-back clicks would not (each
        # would start just after a frame and wait a whole interval for the next).
        rng = np.random.default_rng(2)
        _, _, cpu = timed(click, calls, before=lambda: time.sleep(rng.uniform(0, 1 / fps)))
        browser.close()
    measured = took[-calls:]  # the page's own times, not Playwright's round trips
    return first, (
        statistics.median(measured),
        statistics.quantiles(measured, n=10)[-1],
        cpu,
    )


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
            first, click = click_times(model, args.fps, args.calls, args.threads)
            print(
                f"{arch} {size} px: explain {explain[0]:.1f} / {explain[1]:.1f}, CPU "
                f"{explain[2]:.1f}; click to overlay {click[0]:.1f} / {click[1]:.1f}, CPU "
                f"{click[2]:.1f} (first {first:.0f}); served forward pass {forward[0]:.1f} / "
                f"{forward[1]:.1f}, CPU {forward[2]:.1f}"
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
