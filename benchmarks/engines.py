"""Every engine side by side, in one run (issue 13): the bare model, the live pipeline, accuracy.

Engines are those installed here: torch, onnxruntime and openvino on the CPU, and where a GPU is
present torch on CUDA and onnxruntime's CUDAExecutionProvider (each detected; rows are added,
nothing needs editing). One model serves every figure: the `seed` network trained here on the
digits set (`sightd dataset digits`, `sightd train --epochs 3`; or --model and --data).

- bare model, per engine and precision (engine_bare.py): batch 1 back to back and after 100 ms
  idle (the 2 fps case), batch 8 and 64, one thread, a fresh process each, three rounds;
- the pipeline, per engine (precision auto, model.threads 1), under `sightd run`
  (sightd_run.py) playing a 640x480 MJPG video whose frames the capture passes on as they are:
  p50/p99 captured_at -> receipt at 2 fps; CPU of capture + worker at 2 fps (% of one core);
  CPU ms per labelled frame at 30 fps; labels/s with 1 and with 8 cameras unthrottled (fps 0);
  the worker's RSS and the tree's PSS at 2 fps; time from SIGKILL of the worker to the next
  label received (30 fps, three kills, median; restart_window 1 s, so each restart waits the
  first backoff, 0.2 s); the engines take turns within each scenario, and the CPU other
  processes used during each window is recorded (others' work moves every figure);
- accuracy on the digits test split per engine and precision (engine_bare.py), and the test
  images whose label differs from torch's (float32), with the two top probabilities of each.

Usage: python benchmarks/engines.py [--seconds 15] [--engines torch,onnxruntime,...]
       [--model PATH --data DIR] [--out results.json]
About 15 minutes on 2 cores with three engines; --seconds shortens every pipeline window.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from engine_bare import accuracy, bare, differences, engine_rows
from pipeline_latency import write_scene
from sightd_run import SIGHTD, run_pipeline

# ---- the model ---------------------------------------------------------------------------------


def train_digits(folder: Path) -> tuple[Path, Path]:
    data, run = folder / "digits", folder / "run"
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "cwd": folder}
    subprocess.run([*SIGHTD, "dataset", "digits", str(data)], **quiet)
    (folder / "empty.yaml").write_text("{}\n")
    train = ["train", str(data), "--out", str(run), "--epochs", "3", "--min-steps", "0"]
    train += ["-c", "empty.yaml"]
    subprocess.run([*SIGHTD, *train], **quiet)
    return run / "model.safetensors", data


def make_exports(model: Path) -> None:
    """Made before anything is timed, so no figure includes an export."""
    for fmt in ("onnx", "openvino"):
        subprocess.run([*SIGHTD, "export", str(model), "--format", fmt], check=True)


# ---- the pipeline ------------------------------------------------------------------------------


SCENARIOS = {  # name: (cameras, fps, window in units of --seconds, SIGKILLs of the worker)
    "2fps": (1, 2.0, 2, 0),
    "30fps": (1, 30.0, 1, 3),
    "1x_unthrottled": (1, 0.0, 1, 0),
    "8x_unthrottled": (8, 0.0, 1, 0),
}


def pipelines(folder, video, model, rows, seconds) -> dict:
    """Every scenario for every engine, the engines taking turns within each scenario, so the
    machine's other work falls on all of them alike."""
    results = {row["name"]: {} for row in rows}
    for scenario, (cameras, fps, windows, kills) in SCENARIOS.items():
        for row in rows:
            print(f"{row['name']}: pipeline, {scenario}", flush=True)
            run = run_pipeline(folder, video, model, row, cameras, fps, windows * seconds, kills)
            results[row["name"]][scenario] = run
    return results


# ---- report ------------------------------------------------------------------------------------


def fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def per_label(run: dict, part: str) -> float | None:
    """CPU ms of the captures or of the worker per label."""
    rate = run["labels_per_s"]
    return 10 * run[f"{part}_cpu_percent"] / rate if rate else None


def report(results: dict) -> list[str]:
    lines = [
        "Bare model, one thread (ms: median; batch 1 after 100 ms idle is the 2 fps case):",
        "",
        "| engine | precision | serves as | batch 1 ms | batch 1 after 100 ms idle, ms "
        "| batch 8 img/s | batch 64 img/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_precision in results["bare"].items():
        for precision, b in by_precision.items():
            lines.append(
                f"| {name} | {precision} | {b['device']} | {fmt(b['b1_ms'])} | "
                f"{fmt(b['b1_idle_ms'])} | {b['b8_per_s']:.0f} | {b['b64_per_s']:.0f} |"
            )
    lines += [
        "",
        "Pipeline (`sightd run`, 640x480 JPEG frames, precision auto, model.threads 1):",
        "",
        "| engine | p50 ms at 2 fps | p99 ms | CPU % capture + worker, 2 fps | CPU ms per "
        "label, 30 fps (capture + worker) | labels/s 1 camera unthrottled | labels/s 8 cameras "
        "| worker RSS MiB | tree PSS MiB | SIGKILL of the worker to the next label, s "
        "| other processes' CPU %, most in a window |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in results["pipeline"].items():
        slow, fast = p["2fps"], p["30fps"]
        restarts = [r for r in fast["restart_s"] if r is not None]
        restart = fmt(statistics.median(restarts) if restarts else None)
        each = ", ".join(fmt(r) for r in fast["restart_s"])
        cells = [
            name,
            fmt(slow["p50_ms"], 1),
            fmt(slow["p99_ms"], 1),
            f"{fmt(slow['cpu_percent'])} ({fmt(slow['capture_cpu_percent'])} + "
            f"{fmt(slow['worker_cpu_percent'])})",
            f"{fmt(fast['cpu_ms_per_label'])} ({fmt(per_label(fast, 'capture'))} + "
            f"{fmt(per_label(fast, 'worker'))})",
            f"{p['1x_unthrottled']['labels_per_s']:.0f}",
            f"{p['8x_unthrottled']['labels_per_s']:.0f}",
            f"{slow['worker_rss_mib']:.0f}",
            f"{slow['tree_pss_mib']:.0f}",
            f"{restart} ({each})",
            f"{max(run['others_cpu_percent'] for run in p.values()):.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Accuracy on the digits test split:", ""]
    for name, by_precision in results["accuracy"].items():
        for precision, a in by_precision.items():
            differ = a["differs_from_torch"]
            shown = "; ".join(f"{d['path']} torch {d['torch']} here {d['this']}" for d in differ)
            lines.append(
                f"- {name}, {precision}: {a['accuracy']:.4f} ({a['images']} images); "
                f"{len(differ)} differ from torch (cpu, float32){': ' + shown if differ else ''}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="window per pipeline run")
    parser.add_argument("--engines", help="comma-separated engines or 'engine (device)' rows")
    parser.add_argument("--model", type=Path, help="a digits checkpoint (default: train one)")
    parser.add_argument("--data", type=Path, help="the digits folder it was trained on")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    wanted = args.engines.split(",") if args.engines else None
    results = {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    results.update(bare={}, pipeline={}, accuracy={})
    with tempfile.TemporaryDirectory(prefix="engines-") as tmp:
        folder = Path(tmp)
        if args.model:
            model = folder / "model.safetensors"  # a copy: its exports go beside it, here
            model.write_bytes(args.model.read_bytes())
            split = args.model.with_name("split.json")
            if split.exists():
                model.with_name("split.json").write_bytes(split.read_bytes())
            data = args.data
        else:
            print("training the digits model (3 epochs) ...", flush=True)
            model, data = train_digits(folder)
        make_exports(model)
        video = write_scene(folder / "scene.avi")
        rows = engine_rows(wanted)
        print("engines:", ", ".join(r["name"] for r in rows), flush=True)
        reference = accuracy(model, data, {"engine": "torch", "device": "cpu"}, "float32")
        print("bare model, 3 rounds", flush=True)
        results["bare"] = bare(model, rows)
        for row in rows:
            name = row["name"]
            print(f"{name}: accuracy", flush=True)
            results["accuracy"][name] = {}
            for precision in row["precisions"]:
                got = accuracy(model, data, row, precision)
                predicted = np.array(got["probabilities"]).argmax(1)
                results["accuracy"][name][precision] = {
                    "accuracy": float((predicted == np.array(got["truth"])).mean()),
                    "images": len(predicted),
                    "differs_from_torch": differences(reference, got),
                }
        results["pipeline"] = pipelines(folder, video, model, rows, args.seconds)
    results["load_after"] = os.getloadavg()[0]
    if args.out:  # first: the figures outlive a bug in the report
        args.out.write_text(json.dumps(results, indent=2))
    print("\n".join(report(results)))
    load = f"load average {results['load_before']:.2f} -> {results['load_after']:.2f}"
    print(f"{results['cpus']} CPUs; {load}")


if __name__ == "__main__":
    main()
