"""Many cameras on one worker (issue 14): latency, CPU, drops and batch size as cameras grow.

Every scenario is one `sightd run` (sightd_run.py: supervisor, one capture per camera, one
worker, a listener in its own process stamping labels on receipt and keeping the worker's
statuses), with an untrained `seed` network (10 classes, 64 px; the weights do not change the
cost) served by --engine (default auto):

- 8 cameras at 2 fps playing a 640x480 MJPG video (frames passed on as the file's own JPEG):
  p50/p99 captured_at -> receipt over all cameras and the worst camera's p99 (target p99 <= 50
  ms);
- 1, 2, 4, 8, 16 and 32 synthetic cameras (640x480 test pattern, JPEG-encoded by each capture)
  at 1 fps: the same latency figures, labels/s, CPU of all captures and of the worker (% of one
  core), frames dropped (superseded before classification) and stale (older than
  model.max_frame_age) from the worker's status, and its batch size (mean of each status
  interval's mean frames per forward pass, and the largest batch);
- 8 cameras unthrottled (fps 0, the video): the batch size when the worker is the bottleneck.

Usage: python benchmarks/many_cameras.py [--seconds 20] [--engine auto] [--cameras 1,2,...]
       [--out results.json]
About 8 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from engines import make_exports
from pipeline_latency import write_model, write_scene
from sightd_run import run_pipeline


def fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(results: dict) -> list[str]:
    lines = [
        "| scenario | labels/s | p50 ms | p99 ms | worst camera p99 ms | max ms | CPU % captures "
        "| CPU % worker | dropped | stale | batch mean / max | others' CPU % | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["scenarios"].items():
        frames = r.get("frames_in")
        lines.append(
            f"| {name} | {r['labels_per_s']:.1f} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
            f"{fmt(r['worst_camera_p99_ms'])} | {fmt(r['max_ms'], 0)} | "
            f"{r['capture_cpu_percent']:.1f} | {r['worker_cpu_percent']:.1f} | "
            f"{r.get('dropped', '-')} of {frames} | {r.get('stale', '-')} | "
            f"{fmt(r.get('batch_mean'), 2)} / {r.get('batch_max', '-')} | "
            f"{r['others_cpu_percent']:.0f} | {r['load']:.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="window per scenario")
    parser.add_argument("--engine", default="auto", help="model.engine for the worker")
    parser.add_argument("--cameras", default="1,2,4,8,16,32", help="synthetic camera counts")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    row = {"engine": args.engine, "device": "cpu", "name": args.engine}
    results = {"cpus": os.cpu_count(), "engine": args.engine, "scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="many-cameras-") as tmp:
        folder = Path(tmp)
        model = write_model(folder / "model.safetensors")
        make_exports(model)
        video = write_scene(folder / "scene.avi")
        scenarios = {"8 cameras, 2 fps, video": (8, 2.0, video)}
        for count in (int(n) for n in args.cameras.split(",")):
            scenarios[f"{count} synthetic, 1 fps"] = (count, 1.0, "synthetic")
        scenarios["8 cameras, unthrottled, video"] = (8, 0.0, video)
        for name, (cameras, fps, source) in scenarios.items():
            print(f"running: {name}", flush=True)
            load = os.getloadavg()[0]
            run = run_pipeline(folder, source, model, row, cameras, fps, args.seconds)
            results["scenarios"][name] = {**run, "load": load}
    if args.out:  # first: the figures outlive a bug in the report
        args.out.write_text(json.dumps(results, indent=2))
    print("\n".join(report(results)))


if __name__ == "__main__":
    main()
