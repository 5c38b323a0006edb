"""Event accuracy on the live pipeline (issue 10): wrong events, missed segments, latency.

A model is trained here on the digits' training split with the demo's settings (or taken from
--model). A video of the held-out test images is filmed (event_scene.py: each card held for
3 s while it drifts, tilts, changes light, goes out of focus or is partly covered by a hand;
0.5 s cross-fades; stretches of empty desk with no class at all) at each camera fps, so the
content's timing in seconds is the same at every fps. Each video is played by `sightd run`
(capture process, inference worker, supervisor) and the events are heard on the bus by the
demo's Collector. The demo's judge (sightd/demo/score.py) counts them:

- wrong: an event naming a class that is not on screen in the frame that completed it (on a
  card, in a fade, on the empty desk); events to `unknown` (and to the `nothing` class of
  --nothing) are never wrong;
- announced: a segment with an event naming its class from one of its frames; latency from
  the capture of its first fully visible frame to that event's arrival at the listener.

The pipelines at the different fps run at the same time (one scene length in all, not one per
fps); each is a real process tree of its own.

Usage: python benchmarks/event_accuracy.py [--fps 2 10] [--seconds 150] [--out results.json]
       [--model RUN_DIR] [--nothing 200] [--stable-frames N] [--min-hold-s S]
       [--start-confidence P] [--min-confidence P] [--roi X Y W H]

--roi frames the camera as a user would (`cameras[].roi`, fractions of the frame) on the part
of the desk where cards are shown; the `nothing` class is then recorded through it too, as
`sightd collect` records what the camera's roi shows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import yaml
from event_scene import Painter, Stretch, plan_scene, scene_seconds, segments, write_scene

from sightd.config import SightdConfig
from sightd.demo.run import demo_train_config, free_endpoint
from sightd.demo.score import Collector, judge
from sightd.demo.video import held_out_cards
from sightd.preprocessing import crop_roi
from sightd.publishers.events import UNKNOWN

NOTHING = "nothing"  # the optional class of empty desks (--nothing)
STARTUP_LIMIT = 180.0  # seconds to wait for a pipeline's first label


def main() -> None:
    args = parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sightd-events-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    run_dir, data_dir, trained_s = prepare_model(args, workdir)
    camera = {"roi": args.roi} if args.roi else {}
    cards = {k: v for k, v in held_out_cards(run_dir, data_dir).items() if k != NOTHING}
    stretches = plan_scene(cards, args.seconds)
    events = {
        "stable_frames": args.stable_frames,
        "min_hold_s": args.min_hold_s,
        "start_confidence": args.start_confidence,
    }
    model = {"path": str(run_dir / "model.safetensors"), "reload": False}
    if args.min_confidence is not None:
        model["min_confidence"] = args.min_confidence
    configs = {
        fps: pipeline_config(workdir, stretches, fps, model, events, camera) for fps in args.fps
    }
    effective = next(iter(configs.values()))[0]
    print(
        f"scene: {len(stretches)} stretches ({sum(s.label is not None for s in stretches)} cards) "
        f"of {scene_seconds(stretches):.0f} s; events {effective.events.model_dump()}, "
        f"model.min_confidence {effective.model.min_confidence}, roi {effective.cameras[0].roi}",
        flush=True,
    )
    results = run_pipelines(workdir, configs)
    report = {
        "model": str(run_dir),
        "trained_s": trained_s,
        "scene_s": scene_seconds(stretches),
        "events": effective.events.model_dump(),
        "min_confidence": effective.model.min_confidence,
        "roi": effective.cameras[0].roi,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "runs": results,
    }
    print_table(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fps", type=float, nargs="+", default=[2.0, 10.0])
    parser.add_argument("--seconds", type=float, default=150.0, help="scene length")
    parser.add_argument("--model", type=Path, help="a trained run folder (with split.json)")
    parser.add_argument("--data", type=Path, help="its data set (default: the run's data_dir)")
    parser.add_argument("--epochs", type=int, default=None, help="training (default: the demo's)")
    parser.add_argument("--nothing", type=int, default=0, help="train a 'nothing' class too")
    parser.add_argument("--stable-frames", type=int, default=None)
    parser.add_argument("--min-hold-s", type=float, default=None)
    parser.add_argument("--start-confidence", type=float, default=None)
    parser.add_argument("--min-confidence", type=float, default=None)
    parser.add_argument("--roi", type=float, nargs=4, metavar=("X", "Y", "W", "H"))
    parser.add_argument("--workdir", help="keep the data, model, videos and logs here")
    parser.add_argument("--out", help="write every figure as JSON here")
    return parser.parse_args()


def prepare_model(args, workdir: Path) -> tuple[Path, Path, float | None]:
    """(run folder, its data set, training seconds or None when reused)."""
    if args.model:
        trained = json.loads((args.model / "metrics.json").read_text())
        return args.model, args.data or Path(trained["data_dir"]), None
    from sightd.trainer.digits import write_digits_dataset
    from sightd.trainer.train import run_training

    data_dir = write_digits_dataset(workdir / "digits")
    if args.nothing:
        write_empty_desks(data_dir / NOTHING, args.nothing, args.roi)
    cfg = demo_train_config(data_dir, workdir / "runs", args.epochs)
    began = time.perf_counter()
    run_dir = run_training(cfg, data_dir, workdir / "runs" / "events")
    return run_dir, data_dir, time.perf_counter() - began


def write_empty_desks(folder: Path, count: int, roi=None) -> None:
    """Frames of the empty desk under other draws of light, focus and hands than the scene's
    (seeds from 10000 on): the same kind of desk, never the same frames; the camera's `roi` of
    them, as `sightd collect` records."""
    folder.mkdir(parents=True, exist_ok=True)
    painter = Painter()
    for i in range(count):
        stretch = Stretch(None, None, 0.0, seed=10_000 + i)
        t = float(np.random.default_rng(i).uniform(0, 3.5))
        frame = crop_roi(painter.frame([stretch], t), roi)
        cv2.imwrite(str(folder / f"desk{i:04d}.png"), frame)


def pipeline_config(workdir: Path, stretches, fps: float, model: dict, events: dict, camera):
    """The video at `fps` and a config playing it: (SightdConfig, its file, segments, frames)."""
    video = workdir / f"scene-{fps:g}fps.avi"
    frames = write_scene(video, stretches, fps)
    config = SightdConfig.model_validate(
        {
            "cameras": [{"name": "cam0", "source": str(video), "fps": fps, "loop": True, **camera}],
            "transport": {n: free_endpoint() for n in ("frames", "labels", "status", "status_in")},
            "http": {"listen": free_endpoint().removeprefix("tcp://")},
            "model": model,
            "events": {k: v for k, v in events.items() if v is not None},
            "log_level": "warning",
        }
    )
    path = workdir / f"config-{fps:g}fps.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    judged, video_frames = segments(stretches, fps)
    assert video_frames == frames
    return config, path, judged, frames


def run_pipelines(workdir: Path, configs: dict) -> dict:
    """Every fps's `sightd run` at once, each heard for one pass of its video."""
    runs = {}
    for fps, (config, path, _, frames) in configs.items():
        done = threading.Event()
        collector = Collector(config, frames / fps + 1.5 / fps, done, STARTUP_LIMIT)
        log = (workdir / f"daemon-{fps:g}fps.log").open("w")
        command = [sys.executable, "-m", "sightd", "run", "-c", str(path)]
        # its own process group in our session, as pipeline_latency.py explains (autogroups)
        daemon = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=os.setpgrp
        )
        collector.start()
        runs[fps] = (collector, done, daemon, log)
    results = {}
    for fps, (collector, done, daemon, log) in runs.items():
        done.wait()
        stop(daemon)
        log.close()
        _, _, judged, frames = configs[fps]
        score = judge(collector.heard, judged, frames, quiet={UNKNOWN, NOTHING})
        results[f"{fps:g}"] = figures(score)
    return results


def stop(daemon: subprocess.Popen) -> None:
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()


def figures(score) -> dict:
    latency = score.event_latencies_s
    p50, p95 = np.percentile(latency, [50, 95]) if latency else (None, None)
    return {
        "segments": score.cards,
        "announced": score.announced,
        "missed": score.cards - score.announced,
        "wrong_events": score.wrong_events,
        "unknown_events": score.unknown_events,
        "empty_stretches": score.empty,
        "latency_p50_s": p50,
        "latency_p95_s": p95,
        "labels": len(score.latencies_ms),
        "wrong": score.wrong,
        "missed_segments": score.missed,
        "event_latencies_s": latency,
    }


def print_table(report: dict) -> None:
    load = report["load_average"]
    trained = f"trained in {report['trained_s']:.0f} s" if report["trained_s"] else "reused"
    print(
        f"\nmodel {report['model']} ({trained}); load average {load['before'][0]:.1f} before, "
        f"{load['after'][0]:.1f} after"
    )
    print(
        "| camera fps | segments | announced | missed | wrong events | to unknown/nothing | empty "
        "stretches | change to event p50 | p95 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for fps, r in report["runs"].items():
        share = r["announced"] / r["segments"] if r["segments"] else 0.0
        p50 = f"{r['latency_p50_s']:.2f} s" if r["latency_p50_s"] is not None else "-"
        p95 = f"{r['latency_p95_s']:.2f} s" if r["latency_p95_s"] is not None else "-"
        print(
            f"| {fps} | {r['segments']} | {r['announced']} ({share:.0%}) | {r['missed']} | "
            f"{r['wrong_events']} | {r['unknown_events']} | {r['empty_stretches']} | {p50} "
            f"| {p95} |"
        )
    for fps, r in report["runs"].items():
        for wrong in r["wrong"]:
            print(f"  {fps} fps wrong: {wrong}")
        for missed in r["missed_segments"]:
            print(f"  {fps} fps missed: {missed}")


if __name__ == "__main__":
    main()
