"""Every engine side by side, in one run (issue 13): the bare model, the live pipeline, accuracy.

Engines are those installed here: torch, onnxruntime and openvino on the CPU, and where a GPU is
present torch on CUDA and onnxruntime's CUDAExecutionProvider (each detected; rows are added,
nothing needs editing). One model serves every figure: the `seed` network trained here on the
digits set (`sightd dataset digits`, `sightd train --epochs 3`; or --model and --data).

- bare model, per engine and precision (auto, and float32 where that differs), one thread, in a
  fresh process each, as the worker serves it (sightd.classifier logits on a preprocessed
  batch): batch 1 back to back and after 100 ms idle (the 2 fps case), ms (median); batch 8 and
  64, images/s; three rounds, the engines taking turns, the median of each figure;
- the pipeline, per engine (precision auto, model.threads 1): `sightd run` (supervisor,
  capture(s), worker; no subscriber, no HTTP server) playing a 640x480 MJPG video as JPEG q90
  frames, and a separate listener process stamping each label on receipt
  (pipeline_latency.py's): p50/p99 captured_at -> receipt at 2 fps; CPU of capture + worker at
  2 fps (% of one core); CPU ms per labelled frame at 30 fps; labels/s with 1 and with 8 cameras
  unthrottled (fps 0); the worker's RSS and the tree's PSS at 2 fps; time from SIGKILL of the
  worker to the next label received (30 fps, three kills, median; restart_window 1 s, so each
  restart waits the first backoff, 0.2 s); the engines take turns within each scenario, and
  the CPU other processes used during each window is recorded (others' work moves every figure);
- accuracy on the digits test split per engine and precision, and the test images whose label
  differs from torch's (float32), with the two top probabilities of each.

Usage: python benchmarks/engines.py [--seconds 15] [--engines torch,onnxruntime,...]
       [--model PATH --data DIR] [--out results.json]
About 15 minutes on 2 cores with three engines; --seconds shortens every pipeline window.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from idle_cost import free_ports
from pipeline_latency import cpu_seconds, rss_mib, write_scene

HERE = Path(__file__).resolve().parent
SIGHTD = [sys.executable, "-m", "sightd"]


# ---- which engines -----------------------------------------------------------------------------


def engine_rows(wanted: list[str] | None) -> list[dict]:
    """(engine, device) pairs present here, each with the precisions worth measuring."""
    from sightd.engines.base import installed

    rows = [{"engine": "torch", "device": "cpu", "precisions": ["auto", "float32"]}]
    if installed("onnxruntime"):
        rows.append({"engine": "onnxruntime", "device": "cpu", "precisions": ["float32"]})
    if installed("openvino"):
        rows.append({"engine": "openvino", "device": "cpu", "precisions": ["auto", "float32"]})
    probe = "import torch; print(torch.cuda.is_available())"
    if run_python(probe).strip() == "True":
        rows.append({"engine": "torch", "device": "cuda", "precisions": ["auto", "float32"]})
    if installed("onnxruntime"):
        probe = (
            "import onnxruntime as o; print('CUDAExecutionProvider' in o.get_available_providers())"
        )
        if run_python(probe).strip() == "True":
            rows.append({"engine": "onnxruntime", "device": "cuda", "precisions": ["float32"]})
    for row in rows:
        row["name"] = f"{row['engine']} ({row['device']})"
    return [r for r in rows if not wanted or r["engine"] in wanted or r["name"] in wanted]


def run_python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else code)
    return done.stdout


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


# ---- the bare model, in a process of its own ---------------------------------------------------

BARE = """
import json, sys, time
import numpy as np
from sightd.classifier import Classifier
model, engine, device, precision = sys.argv[1:5]
served = Classifier.load(model, device, precision, engine, threads=1)
size = served.info.image_size
batch = np.random.default_rng(0).standard_normal((64, 3, size, size)).astype(np.float32)
for n in (1, 8, 64):
    for _ in range(20):
        served.logits(batch[:n])

def ms(n, pause, runs):
    times = []
    for _ in range(runs):
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        served.logits(batch[:n])
        times.append(1000 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2]

def per_s(n, seconds=2.0):
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        served.logits(batch[:n])
        count += n
    return count / (time.perf_counter() - start)

print(json.dumps({"device": served.device, "b1_ms": ms(1, 0.0, 500),
                  "b1_idle_ms": ms(1, 0.1, 40), "b8_per_s": per_s(8), "b64_per_s": per_s(64)}))
"""


def bare(model: Path, rows: list[dict], rounds: int = 3) -> dict:
    """Each engine and precision `rounds` times, taking turns; the median of each figure."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(rounds):
        for row in rows:
            for precision in row["precisions"]:
                args = (str(model), row["engine"], row["device"], precision)
                runs.setdefault((row["name"], precision), []).append(
                    json.loads(run_python(BARE, *args))
                )
    out: dict[str, dict] = {}
    for (name, precision), got in runs.items():
        figures = {k: statistics.median(r[k] for r in got) for k in got[0] if k != "device"}
        out.setdefault(name, {})[precision] = {"device": got[0]["device"], **figures}
    return out


# ---- accuracy on the digits test split ---------------------------------------------------------

ACCURACY = """
import json, sys
from sightd.trainer.evaluate import evaluate_checkpoint
model, data, engine, device, precision = sys.argv[1:6]
result = evaluate_checkpoint(model, data, "test", device, engine, precision)
print(json.dumps({"paths": result.data.paths, "truth": result.data.labels.tolist(),
                  "probabilities": result.probabilities.tolist()}))
"""


def accuracy(model: Path, data: Path, row: dict, precision: str) -> dict:
    args = (str(model), str(data), row["engine"], row["device"], precision)
    return json.loads(run_python(ACCURACY, *args))


def differences(reference: dict, other: dict) -> list[dict]:
    """Test images whose label differs from the reference's, with both top-two probabilities."""
    out = []
    ref, got = np.array(reference["probabilities"]), np.array(other["probabilities"])
    for i in np.flatnonzero(ref.argmax(1) != got.argmax(1)):
        top = lambda p: [round(float(v), 4) for v in np.sort(p)[::-1][:2]]  # noqa: E731
        out.append({"path": other["paths"][i], "torch": top(ref[i]), "this": top(got[i])})
    return out


# ---- the pipeline ------------------------------------------------------------------------------


def pipeline_config(folder: Path, video: Path, model: Path, row: dict, cameras: int, fps: float):
    ports = free_ports(4)
    config = {
        "cameras": [
            {"name": f"cam{i}", "source": str(video), "fps": fps, "loop": True}
            for i in range(cameras)
        ],
        "transport": {
            name: f"tcp://127.0.0.1:{port}"
            for name, port in zip(("frames", "labels", "status", "status_in"), ports, strict=True)
        },
        "http": {"enabled": False},
        "model": {"path": str(model), "device": row["device"], "engine": row["engine"]},
        "daemon": {"restart_window": 1.0},  # every kill below waits the first backoff only
        "subscribers": [],
        "log_level": "warning",
    }
    path = folder / f"{row['engine']}-{row['device']}-{cameras}x{fps:g}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def tree(root: int) -> dict[str, int]:
    """title -> pid of the `sightd run` tree (children of the supervisor and the fork server)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,args="], capture_output=True, text=True)
    found = {}
    for line in out.stdout.splitlines():
        pid, pgid, args = line.split(None, 2)
        if int(pgid) == root:
            found[args.strip()] = int(pid)
    return found


def machine_busy() -> float:
    """CPU seconds every CPU has been busy (steal included: time the host gave elsewhere)."""
    from sightd.cpu import busy_ticks, usable_cpus

    return busy_ticks(Path("/proc/stat").read_text(), usable_cpus()) / os.sysconf("SC_CLK_TCK")


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def first_label(record: Path, after: float, timeout: float) -> float | None:
    """Receipt time of the first label of a frame captured after `after` (UNIX time), from the
    listener's live record (one JSON line per label): one in flight at a kill does not count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.exists():
            for line in record.read_text().splitlines():
                received, captured = json.loads(line)
                if captured > after:
                    return received
        time.sleep(0.02)
    return None


LISTENER = """
import json, sys, time
import zmq
from sightd.config import load_config
from sightd.protocol import unpack_message
config = load_config(sys.argv[1])
sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.RECONNECT_IVL, 50)  # a restarted worker is heard as soon as it binds,
sock.setsockopt(zmq.RECONNECT_IVL_MAX, 100)  # not after this reader's own backoff
sock.setsockopt(zmq.SUBSCRIBE, b"label.")
sock.connect(config.transport.labels)
flushed = 0.0
with open(sys.argv[2], "w") as out:
    while True:
        parts = sock.recv_multipart()
        received = time.time()
        _, _, body = unpack_message(parts)
        out.write(json.dumps([received, body["captured_at"]]) + "\\n")
        if received - flushed > 0.05:
            out.flush()
            flushed = received
"""


def run_pipeline(folder, video, model, row, cameras, fps, seconds, kills=0) -> dict:
    config = pipeline_config(folder, video, model, row, cameras, fps)
    record = config.with_suffix(".labels")
    with open(config.with_suffix(".log"), "wb") as log:
        run = subprocess.Popen(
            [*SIGHTD, "run", "-c", str(config)], stdout=log, stderr=log, start_new_session=True
        )
    listener = subprocess.Popen([sys.executable, "-c", LISTENER, str(config), str(record)])
    try:
        if first_label(record, 0.0, 120) is None:
            log = config.with_suffix(".log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{row['name']}: no label within 120 s; its log ends:\n{log}")
        time.sleep(3.0)  # warm: every batch size seen, caches settled
        pids = tree(run.pid)
        captures = [pid for title, pid in pids.items() if title.startswith("sightd.capture")]
        workers = [pids["sightd.infer"]]
        ours = [*pids.values(), listener.pid]
        cpu0 = [sum(cpu_seconds(p) for p in group) for group in (captures, workers)]
        busy0, t0 = machine_busy() - sum(cpu_seconds(p) for p in ours), time.time()
        time.sleep(seconds)
        cpu1 = [sum(cpu_seconds(p) for p in group) for group in (captures, workers)]
        busy1, t1 = machine_busy() - sum(cpu_seconds(p) for p in ours), time.time()
        capture_cpu, worker_cpu = (
            100 * (b - a) / (t1 - t0) for a, b in zip(cpu0, cpu1, strict=True)
        )
        result = {"cpu_percent": capture_cpu + worker_cpu, "capture_cpu_percent": capture_cpu}
        result["worker_cpu_percent"] = worker_cpu
        result["others_cpu_percent"] = 100 * (busy1 - busy0) / (t1 - t0)
        result["worker_rss_mib"] = rss_mib(pids["sightd.infer"])
        result["tree_pss_mib"] = sum(pss_mib(p) for p in tree(run.pid).values())
        restarts = []
        for _ in range(kills):
            time.sleep(1.5)  # past restart_window: the restart waits the first backoff
            worker = tree(run.pid)["sightd.infer"]
            killed = time.time()
            os.kill(worker, signal.SIGKILL)
            back = first_label(record, killed, 60)
            restarts.append(None if back is None else back - killed)
        result["restart_s"] = restarts
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(timeout=30)
        listener.kill()
        listener.wait()
    labels = [json.loads(line) for line in record.read_text().splitlines()]
    window = [(r, c) for r, c in labels if t0 <= r <= t1]
    latency = sorted(1000 * (r - c) for r, c in window)
    result["labels_per_s"] = len(window) / (t1 - t0)
    result["p50_ms"] = latency[len(latency) // 2] if latency else None
    result["p99_ms"] = (
        latency[min(len(latency) - 1, round(0.99 * (len(latency) - 1)))] if latency else None
    )
    result["cpu_ms_per_label"] = (
        10 * result["cpu_percent"] / result["labels_per_s"] if result["labels_per_s"] else None
    )
    return result


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
    print("\n".join(report(results)))
    load = f"load average {results['load_before']:.2f} -> {results['load_after']:.2f}"
    print(f"{results['cpus']} CPUs; {load}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
