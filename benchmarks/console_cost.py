"""What the browser console costs the live pipeline, all in one run (issue 12).

Real processes: `sightd run` with one camera playing a 640x480 video file (this script writes
it, as pipeline_latency.py does) at --fps (10), JPEG q90, an untrained 10-class `seed` model
(same cost as a trained one), no subscribers, free ports. A listener process stamps every label
on receipt (latency = receipt - captured_at). CPU of the http and infer processes (and of the
capture, for scale) is utime+stime from /proc/<pid>/stat over each phase, as % of one core.

Phases, --seconds each after --warmup, in this order:
- without console: `http.console: false` (the http process serves /metrics and /healthz only);
- then a second `sightd run` of the same config with the console on, and:
  - no viewer;
  - one viewer: a client reading the MJPEG stream and the server-sent events as they come;
  - a stalled viewer: it opens both streams and never reads a byte;
  - three viewers reading, as the first.
Console CPU per viewer at --fps is (http CPU with 3 viewers - with 1) / 2.

Usage: python benchmarks/console_cost.py [--seconds 30] [--warmup 8] [--fps 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml
from pipeline_baselines import percentile
from pipeline_latency import write_model, write_scene

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCESSES = ("http", "infer", "capture:cam0")
LISTENER = """
import sys, time
from sightd.client import subscribe
with open(sys.argv[1], "w", buffering=1) as out:
    for message in subscribe("label", config=sys.argv[2]):
        out.write(f"{time.time()!r} {message['captured_at']!r}\\n")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(folder: Path, video: Path, model: Path, fps: float, console: bool) -> Path:
    names = ("frames", "labels", "status", "status_in")
    config = {
        "cameras": [{"name": "cam0", "source": str(video), "fps": fps}],
        "transport": {n: f"tcp://127.0.0.1:{free_port()}" for n in names},
        "model": {"path": str(model), "device": "cpu", "reload": False},
        "subscribers": [],
        "http": {"listen": f"127.0.0.1:{free_port()}", "console": console},
        "log_level": "warning",
    }
    path = folder / f"config-{'console' if console else 'bare'}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---- the pipeline ------------------------------------------------------------------------------


class Pipeline:
    """`sightd run` in its own session, plus the label listener."""

    def __init__(self, config: Path, folder: Path):
        self.config = yaml.safe_load(config.read_text())
        self.url = f"http://{self.config['http']['listen']}"
        self.stamps = folder / f"{config.stem}.labels"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = open(folder / f"{config.stem}.log", "wb")  # noqa: SIM115 - lives with the run
        self.run = subprocess.Popen(
            [sys.executable, "-m", "sightd", "run", "-c", str(config)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        self.listener = subprocess.Popen(
            [sys.executable, "-c", LISTENER, str(self.stamps), str(config)],
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not self._healthy():
            if time.monotonic() > deadline or self.run.poll() is not None:
                raise SystemExit(f"the pipeline did not come up; see {log.name}")
            time.sleep(0.5)
        self.pids = self._find_pids()

    def _healthy(self) -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        return False

    def _find_pids(self) -> dict[str, int]:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                name = title.removeprefix("sightd.").strip()
                ours = os.getsid(int(entry.name)) == self.run.pid
                if title.startswith("sightd.") and name in PROCESSES and ours:
                    found[name] = int(entry.name)
        missing = set(PROCESSES) - set(found)
        if missing:
            raise SystemExit(f"no process for {missing}")
        return found

    def cpu(self) -> dict[str, float]:
        times = {}
        for name, pid in self.pids.items():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            times[name] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        return times

    def latencies(self, start: float, end: float) -> list[float]:
        values = []
        for line in self.stamps.read_text().splitlines():
            received, captured = (float(x) for x in line.split())
            if start <= received <= end:
                values.append(received - captured)
        return sorted(values)

    def stop(self) -> None:
        for process in (self.listener, self.run):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in (self.listener, self.run):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


# ---- viewers -----------------------------------------------------------------------------------


class Viewer:
    """A page's two streams, read as fast as they come (or, stalled, opened and never read)."""

    def __init__(self, url: str, stalled: bool = False):
        self.url, self.stop = url, threading.Event()
        self.frames_bytes = self.events = 0
        self.sockets: list[socket.socket] = []
        if stalled:
            host, port = url.removeprefix("http://").split(":")
            for path in ("/stream/cam0.mjpg", "/api/stream"):
                sock = socket.create_connection((host, int(port)))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                self.sockets.append(sock)
            self.threads = []
        else:
            self.threads = [
                threading.Thread(target=self._read, args=(path,), daemon=True)
                for path in ("/stream/cam0.mjpg", "/api/stream")
            ]
        for thread in self.threads:
            thread.start()

    def _read(self, path: str) -> None:
        with httpx.stream("GET", f"{self.url}{path}", timeout=None) as response:
            for chunk in response.iter_raw():
                if path.endswith(".mjpg"):
                    self.frames_bytes += len(chunk)
                else:
                    self.events += chunk.count(b"\n\n")
                if self.stop.is_set():
                    return

    def close(self) -> None:
        self.stop.set()
        for sock in self.sockets:
            sock.close()
        for thread in self.threads:
            thread.join(5)


def measure(pipeline: Pipeline, seconds: float, warmup: float, viewers: list[Viewer]) -> dict:
    time.sleep(warmup)
    before, start = pipeline.cpu(), time.time()
    time.sleep(seconds)
    after, end = pipeline.cpu(), time.time()
    latencies = pipeline.latencies(start, end)
    result = {
        "cpu": {name: 100 * (after[name] - before[name]) / (end - start) for name in before},
        "labels": len(latencies),
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "viewer_mb_s": sum(v.frames_bytes for v in viewers) / 2**20 / (end - start + warmup),
    }
    for viewer in viewers:
        viewer.close()
    return result


def served_by(url: str) -> str:
    """The worker's engine and device, as its status (the console's model card) names them:
    the config leaves model.engine at its default, auto."""
    model = httpx.get(f"{url}/api/state", timeout=10).json().get("model") or {}
    return f"{model.get('engine')} on {model.get('device')}"


def frame_kb(video: Path) -> float:
    """The size of the scene's frames as the capture publishes them (JPEG q90), on average."""
    import cv2

    capture, sizes = cv2.VideoCapture(str(video)), []
    ok, frame = capture.read()
    while ok:
        sizes.append(len(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]))
        ok, frame = capture.read()
    capture.release()
    return sum(sizes) / len(sizes) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sightd-console-cost-"))
    video, model = write_scene(folder / "scene.avi"), write_model(folder / "model.safetensors")
    rows: dict[str, dict] = {}
    load = [os.getloadavg()[0]]

    pipeline = Pipeline(write_config(folder, video, model, args.fps, console=False), folder)
    try:
        rows["without console (http.console: false)"] = measure(
            pipeline, args.seconds, args.warmup, []
        )
    finally:
        pipeline.stop()
    pipeline = Pipeline(write_config(folder, video, model, args.fps, console=True), folder)
    try:
        phases = {
            "console, no viewer": lambda: [],
            "console, 1 viewer": lambda: [Viewer(pipeline.url)],
            "console, 1 stalled viewer": lambda: [Viewer(pipeline.url, stalled=True)],
            "console, 3 viewers": lambda: [Viewer(pipeline.url) for _ in range(3)],
        }
        engine = served_by(pipeline.url)
        for name, viewers in phases.items():
            rows[name] = measure(pipeline, args.seconds, args.warmup, viewers())
    finally:
        pipeline.stop()
    load.append(os.getloadavg()[0])

    loads = f"load {load[0]:.2f} -> {load[1]:.2f}"
    size = f"{frame_kb(video):.0f} KB a frame"
    print(
        f"\n{args.fps:g} fps, 640x480 JPEG ({size}), {args.seconds:g} s per phase, {loads}, "
        f"model served by {engine}\n"
    )
    print("| phase | latency p50 | p95 | http CPU | infer CPU | capture CPU | MJPEG read |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        cpu = row["cpu"]
        print(
            f"| {name} | {row['p50_ms']:.1f} ms | {row['p95_ms']:.1f} ms | {cpu['http']:.1f}% "
            f"| {cpu['infer']:.1f}% | {cpu['capture:cam0']:.1f}% | {row['viewer_mb_s']:.2f} MB/s |"
        )
    one, three = rows["console, 1 viewer"]["cpu"]["http"], rows["console, 3 viewers"]["cpu"]["http"]
    print(f"\nconsole CPU per viewer at {args.fps:g} fps: {(three - one) / 2:.1f}% of a core")
    if args.out:
        args.out.write_text(
            json.dumps(
                {"rows": rows, "load": load, "engine": engine, "args": vars(args)},
                default=str,
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
