"""Live-pipeline figures on this machine, all in one run (issue 3).

Real processes over real sockets: `sightd capture` (one per camera) reads a 640x480 video file
this script writes (photo-like: smooth light, a moving textured disc, sensor noise) and publishes
JPEG q90 frames; `sightd infer` classifies them with a `seed` model (10 classes, the default
arch; untrained weights cost the same time); a separate subscriber process (this script with
`subscribe`) stamps each label on receipt.

- latency: receipt - captured_at, p50/p99, at 2 fps, 30 fps, and 8 cameras at 5 fps each;
- throughput: labels/s with the sources unthrottled (fps 0), 1 and 8 cameras, against the bare
  model measured here (forward passes on batches of 64 and of 1, and JPEG frames -> probabilities
  with decoding and preprocessing, batches of 8);
- idle cost at 2 fps: CPU (% of one core) and RSS of capture + worker, from /proc;
- frame age at inference (max) and frames dropped under load, from the worker's status;
- baseline: the seed's live loop (grab a frame every 0.5 s, save it to a temporary folder, read
  it back with PIL, torchvision transforms, predict), latency grab -> prediction.

Usage: python benchmarks/pipeline_latency.py [--seconds 15] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml
from pipeline_baselines import bare_model, percentile, read_frames, seed_loop

CLASSES = 10
BASE_PORT = 17550


def write_scene(path: Path, frames: int = 90) -> Path:
    """A 640x480 MJPG clip: smooth background, a textured disc moving across, noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    low = rng.uniform(40, 220, size=(6, 8, 3)).astype(np.float32)
    background = cv2.resize(low, (640, 480), interpolation=cv2.INTER_CUBIC)
    texture = 25 * np.sin(xx / 7)[..., None]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    for i in range(frames):
        cx, cy = 100 + 440 * i / frames, 240 + 80 * np.sin(i / 9)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < 90**2)[..., None]
        image = np.where(mask, np.float32([40, 120, 210]) + texture, background)
        image = image + rng.normal(0, 6, image.shape)
        writer.write(cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0))
    writer.release()
    return path


def write_model(path: Path) -> Path:
    import torch

    from sightd.checkpoint import ModelInfo, save_checkpoint
    from sightd.model import create_model

    torch.manual_seed(0)
    classes = [f"class{i}" for i in range(CLASSES)]
    info = ModelInfo("seed", classes, 64, [0.5] * 3, [0.5] * 3)
    save_checkpoint(path, create_model("seed", CLASSES).eval(), info)
    return path


def write_config(folder: Path, video: Path, model: Path, cameras: int, fps: float) -> Path:
    config = {
        "cameras": [
            {"name": f"cam{i}", "source": str(video), "fps": fps, "loop": True}
            for i in range(cameras)
        ],
        "transport": {
            "frames": f"tcp://127.0.0.1:{BASE_PORT}",
            "labels": f"tcp://127.0.0.1:{BASE_PORT + 1}",
            "status": f"tcp://127.0.0.1:{BASE_PORT + 2}",
            "status_in": f"tcp://127.0.0.1:{BASE_PORT + 3}",
            "status_interval": 1.0,
        },
        "http": {"listen": f"127.0.0.1:{BASE_PORT + 4}"},
        "model": {"path": str(model), "device": "cpu"},
        "log_level": "warning",
    }
    path = folder / f"config-{cameras}x{fps:g}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---- the subscriber process -----------------------------------------------------------------


def subscriber(config_path: str, seconds: float, out: str) -> None:
    """Record (receipt, captured_at) of every label and every worker status for `seconds`."""
    import zmq

    from sightd.config import load_config
    from sightd.protocol import unpack_message
    from sightd.transport import connect_subscriber

    config = load_config(config_path)
    prefixes = [b"label.", b"status.infer"]
    endpoints = [config.transport.labels, config.transport.status]  # labels; the status bus
    sock = connect_subscriber(endpoints, prefixes, config.transport)
    labels, statuses = [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not sock.poll(200):
            continue
        parts = sock.recv_multipart(zmq.NOBLOCK)
        received = time.time()
        kind, _, body = unpack_message(parts)
        if kind == "label":
            labels.append((received, body["captured_at"], body["inferred_at"]))
        else:
            statuses.append(body)
    Path(out).write_text(json.dumps({"labels": labels, "statuses": statuses}))


# ---- running one scenario ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(*args: str) -> subprocess.Popen:
    """A process in its own group but in our session, as `sightd run` starts its children:
    with a session each, Linux's autogroup scheduling would share the CPU per session and
    ignore the captures' lower priority (seen: the worker got 25% of a core instead of 89%)."""
    return subprocess.Popen([sys.executable, *args], preexec_fn=os.setpgrp)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_for_labels(config: Path, timeout: float = 60.0) -> None:
    """Until the worker publishes labels (its torch import and the sockets take a while)."""
    from sightd.client import subscribe

    for _ in subscribe("label", config=str(config), timeout=timeout):
        return
    raise RuntimeError("no label within the timeout; is the pipeline broken?")


def run_scenario(folder: Path, video, model, cameras: int, fps: float, seconds: float) -> dict:
    config = write_config(folder, video, model, cameras, fps)
    record = folder / f"record-{cameras}x{fps:g}.json"
    warmup = 3.0
    infer = start("-m", "sightd", "infer", "-c", str(config))
    captures = [
        start("-m", "sightd", "capture", "-c", str(config), "--camera", f"cam{i}")
        for i in range(cameras)
    ]
    procs = [infer, *captures]
    try:
        wait_for_labels(config)
        sub = start(__file__, "subscribe", str(config), str(warmup + seconds + 1), str(record))
        procs.append(sub)
        time.sleep(warmup)
        pids = [p.pid for p in (infer, *captures)]
        cpu0, t0 = sum(cpu_seconds(p) for p in pids), time.time()
        time.sleep(seconds)
        cpu1, t1 = sum(cpu_seconds(p) for p in pids), time.time()
        rss = sum(rss_mib(p) for p in pids)
        sub.wait(timeout=seconds + 30)
    finally:
        stop(procs)
    data = json.loads(record.read_text())
    return summarise(data, t0, t1, cpu1 - cpu0, rss)


def summarise(data: dict, t0: float, t1: float, cpu: float, rss: float) -> dict:
    labels = [(r, c, i) for r, c, i in data["labels"] if t0 <= r <= t1]
    latency = sorted(1000 * (r - c) for r, c, _ in labels)
    inferred = sorted(1000 * (i - c) for _, c, i in labels)  # the part before the last hop
    statuses = [s for s in data["statuses"] if t0 <= s["at"] <= t1 + 1]
    first, last = statuses[0], statuses[-1]
    return {
        "labels": len(labels),
        "labels_per_s": len(labels) / (t1 - t0),
        "p50_ms": percentile(latency, 50),
        "p99_ms": percentile(latency, 99),
        "p50_inferred_ms": percentile(inferred, 50),
        "max_age_ms": max(s.get("max_age_ms", 0.0) for s in statuses),
        "dropped": last["dropped"] - first["dropped"],
        "frames_in": last["frames_in"] - first["frames_in"],
        "stale": last["stale"] - first["stale"],
        "cpu_percent": 100 * cpu / (t1 - t0),
        "rss_mib": rss,
    }


# ---- report ----------------------------------------------------------------------------------


def report(results: dict) -> list[str]:
    bare = results["bare"]
    lines = [
        "| scenario | labels/s | p50 ms | p99 ms | p50 to inferred_at ms | max frame age ms "
        "| dropped | CPU % | RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["scenarios"].items():
        lines.append(
            f"| {name} | {r['labels_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['p50_inferred_ms']:.1f} | {r['max_age_ms']:.0f} | "
            f"{r['dropped']} of {r['frames_in']} | {r['cpu_percent']:.1f} | {r['rss_mib']:.0f} |"
        )
    seed = results["seed_loop"]
    lines.append(
        f"| seed live loop, 2 fps (baseline) | 2.0 | {seed['p50_ms']:.1f} | "
        f"{seed['p99_ms']:.1f} | - | - | - | {seed['cpu_percent']:.1f} | - |"
    )
    lines.append("")
    lines.append(
        f"bare model, 1 thread: {bare['forward_per_s']:.0f} images/s (forward, batch 64); "
        f"{bare['forward_1_per_s']:.0f} images/s (forward, batch 1: all one camera can form); "
        f"{bare['frames_per_s']:.0f} frames/s (640x480 JPEG frames -> probabilities, batch 8)"
    )
    for name, r in results["scenarios"].items():
        if "unthrottled" in name:
            lines.append(
                f"{name}: {r['labels_per_s']:.0f} labels/s = "
                f"{100 * r['labels_per_s'] / bare['forward_per_s']:.0f}% of the forward pass, "
                f"{100 * r['labels_per_s'] / bare['frames_per_s']:.0f}% of frames -> probabilities"
                + (
                    f", {100 * r['labels_per_s'] / bare['forward_1_per_s']:.0f}% of batch 1"
                    if name.startswith("1 ")
                    else ""
                )
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per run")
    parser.add_argument("--out", help="also write the figures here as JSON")
    args = parser.parse_args()
    results = {"machine": f"{os.cpu_count()} CPUs", "scenarios": {}}
    results["load_before"] = os.getloadavg()[0]  # other work on the machine skews every figure
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video, model = write_scene(folder / "scene.avi"), write_model(folder / "model.safetensors")
        jpeg = cv2.imencode(".jpg", read_frames(video, 1)[0], [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
        print(f"640x480 JPEG q90 frames of {jpeg.size / 1024:.0f} KiB", flush=True)
        runs = {
            "1 camera, 2 fps": (1, 2.0, 2 * args.seconds),
            "1 camera, 30 fps": (1, 30.0, args.seconds),
            "8 cameras, 5 fps each": (8, 5.0, args.seconds),
            "1 camera, unthrottled": (1, 0.0, args.seconds),
            "8 cameras, unthrottled": (8, 0.0, args.seconds),
        }
        for name, (cameras, fps, seconds) in runs.items():
            print(f"running: {name} ({seconds:.0f} s)", flush=True)
            results["scenarios"][name] = run_scenario(folder, video, model, cameras, fps, seconds)
        print("running: bare model and the seed's live loop", flush=True)
        results["bare"] = bare_model(model, video)
        results["seed_loop"] = seed_loop(model, video, args.seconds)
    results["load_after"] = os.getloadavg()[0]
    print("\n".join(report(results)))
    before, after = results["load_before"], results["load_after"]
    print(f"load average (1 min) before/after: {before:.2f}/{after:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "subscribe":
        subscriber(sys.argv[2], float(sys.argv[3]), sys.argv[4])
    else:
        main()
