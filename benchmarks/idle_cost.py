"""Idle cost of every `sightd run` process at 2 fps, and label latency, before and after (issue 11).

Each revision (--before, --after: git revisions of this repository) is exported with `git
archive` into a temporary folder and run from there with PYTHONPATH pointing at it (the
editable install of the working tree would otherwise win; each export is checked by printing
sightd.__file__ in a subprocess, and each run by the fork server's sys.path). A run is `python
-m sightd run -c CONFIG` in its own session: one camera playing a 640x480 video file this
script writes, a digits model trained once here (or --model), one `print` subscriber (stdout
to /dev/null), free ports for every endpoint, and `http.listen` on a free port where the
revision has an `http` section. A listener beside it (that revision's sightd.client.subscribe)
stamps every label on receipt.

Idle cost: --warmup seconds after the first label, every process of the supervisor's tree
(the supervisor, multiprocessing's fork server and resource tracker, every child) is sampled
twice, --seconds apart: utime+stime from /proc/<pid>/stat and voluntary + nonvoluntary context
switches summed over the threads in /proc/<pid>/task/*/status. CPU % (of one core) = CPU time /
wall time; wakeups/s = context switches / wall time. Latency: captured_at to receipt at the
listener, p50/p95/p99, over the same window at 2 fps, and in a second run at --latency-fps.

The revisions are interleaved (before, after, before, after, ... --repeats times each), so the
machine's other work hits both alike; the tables show the median of the runs and after/before.
The 1-minute load average is recorded before and after every run.

benchmarks/pipeline_latency.py is not used for latency by default: at the refactor (8db872f)
the worker's status moved from the labels socket to the status bus, and each revision's copy
reads it where that revision sends it, so the two copies measure differently (that benchmark
was fixed for the status bus after 8d1b300). --pipeline-latency SECONDS runs each revision's
own copy anyway (interleaved too) and records its figures or its failure.

Usage: python benchmarks/idle_cost.py [--before 3d35d26] [--after HEAD] [--repeats 2]
       [--seconds 60] [--warmup 15] [--latency-fps 30] [--latency-seconds 30] [--model PATH]
       [--engine torch|onnxruntime|openvino] [--pipeline-latency SECONDS] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
ORDER = [
    "supervisor",
    "forkserver",
    "resource_tracker",
    "capture:cam0",
    "infer",
    "subscriber:print",
    "http",
]
LISTENER = """
import sys, time
from sightd.client import subscribe
with open(sys.argv[1], "w", buffering=1) as out:
    for message in subscribe("label", config=sys.argv[2]):
        out.write(f"{time.time()!r} {message['captured_at']!r}\\n")
"""


# ---- the revisions -------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def tree_env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}


def tree_python(tree: Path, code: str) -> str:
    """Run `code` with the tree's sightd (cwd = the tree, so `-c`'s '' is the tree too)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree,
        env=tree_env(tree),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def export(revision: str, folder: Path) -> dict:
    commit = git("rev-parse", "--verify", f"{revision}^{{commit}}")
    tree = folder / commit[:12]
    tree.mkdir()
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    imported = Path(tree_python(tree, "import sightd; print(sightd.__file__)")).resolve()
    if not imported.is_relative_to(tree.resolve()):
        raise SystemExit(f"{revision}: PYTHONPATH={tree} imports sightd from {imported}")
    has_http, has_engine = tree_python(
        tree,
        "from sightd.config import ModelConfig, SightdConfig; "
        "print('http' in SightdConfig.model_fields, 'engine' in ModelConfig.model_fields)",
    ).split()
    subject = git("log", "-1", "--format=%s", commit)
    print(f"{revision} = {commit[:12]} ({subject[:60]}...): sightd from {imported}", flush=True)
    return {
        "revision": revision,
        "commit": commit,
        "tree": tree,
        "http": has_http == "True",
        "engine": has_engine == "True",
    }


# ---- what a run needs ----------------------------------------------------------------------


def write_scene(path: Path, frames: int = 40) -> Path:
    """A 640x480 MJPG clip like pipeline_latency's: smooth light, a moving disc, noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    low = rng.uniform(40, 220, size=(6, 8, 3)).astype(np.float32)
    background = cv2.resize(low, (640, 480), interpolation=cv2.INTER_CUBIC)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 2, (640, 480))
    for i in range(frames):
        cx, cy = 100 + 440 * i / frames, 240 + 80 * np.sin(i / 5)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < 90**2)[..., None]
        image = np.where(mask, np.float32([40, 120, 210]), background)
        image = image + rng.normal(0, 6, image.shape)
        writer.write(np.clip(image, 0, 255).astype(np.uint8))
    writer.release()
    return path


def train_model(tree: Path, folder: Path) -> Path:
    """The digits set, 2 epochs of the default `seed` network at 64 px (about 25 s on 2 cores)."""
    env, data, run = tree_env(tree), folder / "digits", folder / "model"
    quiet = {"cwd": folder, "env": env, "check": True, "stdout": subprocess.DEVNULL}
    subprocess.run([sys.executable, "-m", "sightd", "dataset", "digits", str(data)], **quiet)
    train = ["train", str(data), "--out", str(run), "--epochs", "2", "--min-steps", "0"]
    subprocess.run([sys.executable, "-m", "sightd", *train, "--device", "cpu"], **quiet)
    return run / "model.safetensors"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def write_config(
    path: Path, video: Path, model: Path, fps: float, http: bool, engine: str | None
) -> Path:
    frames, labels, status, status_in, web = free_ports(5)
    config = {
        "cameras": [{"name": "cam0", "source": str(video), "fps": fps, "loop": True}],
        "transport": {
            "frames": f"tcp://127.0.0.1:{frames}",
            "labels": f"tcp://127.0.0.1:{labels}",
            "status": f"tcp://127.0.0.1:{status}",
            "status_in": f"tcp://127.0.0.1:{status_in}",
        },
        "model": {"path": str(model), "device": "cpu"},
        "subscribers": [{"type": "print"}],
    }
    if http:
        config["http"] = {"listen": f"127.0.0.1:{web}"}
    if engine:
        config["model"]["engine"] = engine
    path.write_text(yaml.safe_dump(config))
    return path


# ---- the process tree in /proc ---------------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def component(pid: int) -> str:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if cmdline.startswith("sightd."):
        return cmdline.split()[0].removeprefix("sightd.")
    for name in ("forkserver", "resource_tracker"):
        if f"multiprocessing.{name}" in cmdline:
            return name
    return cmdline[:60]


def sample(root: int) -> dict[str, dict]:
    """Per component: pid, CPU seconds, context switches over all its threads, threads."""
    out = {}
    for pid in tree_pids(root):
        try:
            name = component(pid)
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            voluntary = involuntary = threads = 0
            for task in Path(f"/proc/{pid}/task").iterdir():
                try:
                    status = (task / "status").read_text()
                except OSError:  # the thread ended meanwhile
                    continue
                threads += 1
                for line in status.splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        voluntary += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        involuntary += int(line.split()[1])
        except OSError:  # the process ended meanwhile
            continue
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        out[name] = {
            "pid": pid,
            "cpu_s": cpu,
            "voluntary": voluntary,
            "involuntary": involuntary,
            "threads": threads,
        }
    return out


def idle_figures(first: dict, second: dict, wall: float) -> dict[str, dict]:
    figures = {}
    for name, b in second.items():
        a = first.get(name)
        if a is None or a["pid"] != b["pid"]:
            figures[name] = {"restarted": True}
            continue
        switches = b["voluntary"] + b["involuntary"] - a["voluntary"] - a["involuntary"]
        figures[name] = {
            "cpu_percent": 100 * (b["cpu_s"] - a["cpu_s"]) / wall,
            "wakeups_per_s": switches / wall,
            "voluntary_per_s": (b["voluntary"] - a["voluntary"]) / wall,
            "threads": b["threads"],
        }
    for name in first.keys() - second.keys():
        figures[name] = {"restarted": True}
    return figures


# ---- one run -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def latency(record: Path, t0: float, t1: float) -> dict:
    lines = [line.split() for line in record.read_text().splitlines() if line.strip()]
    ms = [1000 * (float(r) - float(c)) for r, c in lines if t0 <= float(r) <= t1]
    return {
        "labels": len(ms),
        "labels_per_s": len(ms) / (t1 - t0),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms, default=None),
    }


def wait_for_label(record: Path, supervisor: subprocess.Popen, log: Path, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record.exists() and record.read_text().strip():
            return
        if supervisor.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"no label (supervisor rc {supervisor.poll()}); its log:\n{tail(log)}")


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def check_imports(root: int, tree: Path) -> None:
    """The fork server, which all children fork from, names its sys.path on its command line."""
    for pid in tree_pids(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "multiprocessing.forkserver" in cmdline and str(tree) not in cmdline:
            raise RuntimeError(f"the fork server's sys.path lacks {tree}: {cmdline}")


def run_once(rev: dict, folder: Path, video: Path, model: Path, fps: float, args, tag: str):
    tree, name = rev["tree"], f"{rev['commit'][:12]}-{tag}"
    engine = args.engine if rev["engine"] else None  # a revision before engines serves torch
    config = write_config(folder / f"{name}.yaml", video, model, fps, rev["http"], engine)
    record, log = folder / f"{name}.labels", folder / f"{name}.log"
    load_before, started = os.getloadavg(), time.time()
    with log.open("w") as err:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "sightd", "run", "-c", str(config)],
            cwd=tree,
            env=tree_env(tree),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # a daemon's own session, as systemd or a terminal gives it
        )
    listener = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(record), str(config)],
        cwd=tree,
        env=tree_env(tree),
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_label(record, supervisor, log)
        check_imports(supervisor.pid, tree)
        time.sleep(args.warmup)
        seconds = args.seconds if tag.startswith("idle") else args.latency_seconds
        first, t0 = sample(supervisor.pid), time.time()
        time.sleep(seconds)
        second, t1 = sample(supervisor.pid), time.time()
    finally:
        listener.terminate()
        supervisor.send_signal(signal.SIGTERM)
        stop_started = time.monotonic()
        try:
            rc = supervisor.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(supervisor.pid, signal.SIGKILL)
            rc = supervisor.wait()
        stop_s = time.monotonic() - stop_started
        listener.wait()
    result = {
        "commit": rev["commit"],
        "started": started,
        "fps": fps,
        "load_before": load_before[0],
        "load_after": os.getloadavg()[0],
        "exit_code": rc,
        "stop_s": stop_s,  # SIGTERM to the supervisor's exit, every process stopped
        "latency": latency(record, t0, t1),
    }
    if tag.startswith("idle"):
        result["components"] = idle_figures(first, second, t1 - t0)
    return result


def run_pipeline_latency(rev: dict, folder: Path, seconds: float, tag: str) -> dict:
    """The revision's own benchmarks/pipeline_latency.py, from its export."""
    tree, out = rev["tree"], folder / f"pipeline-{rev['commit'][:12]}-{tag}.json"
    load_before, started = os.getloadavg()[0], time.time()
    proc = subprocess.run(
        [sys.executable, "benchmarks/pipeline_latency.py", "--seconds", str(seconds)]
        + ["--out", str(out)],
        cwd=tree,
        env=tree_env(tree),
        capture_output=True,
        text=True,
    )
    result = {"commit": rev["commit"], "started": started, "load_before": load_before}
    result["load_after"] = os.getloadavg()[0]
    if proc.returncode != 0:
        result["failed"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    else:
        result["scenarios"] = json.loads(out.read_text())["scenarios"]
    return result


# ---- report --------------------------------------------------------------------------------


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(after: float | None, before: float | None) -> str:
    if after is None or before is None:
        return "new" if before is None and after is not None else "-"
    return f"{after / before:.2f}x" if before > 0 else "-"


def idle_table(results: dict, before: str, after: str) -> list[str]:
    runs = {c: [r for r in results["idle"] if r["commit"] == c] for c in (before, after)}
    names = {n for rs in runs.values() for r in rs for n in r["components"]}
    names = sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))

    def figure(commit: str, name: str, key: str) -> float | None:
        values = [r["components"].get(name, {}).get(key) for r in runs[commit]]
        return median(values)

    lines = [
        "| process | CPU % before | CPU % after | after/before | wakeups/s before "
        "| wakeups/s after | after/before | voluntary/s before / after | threads before / after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ("cpu_percent", "wakeups_per_s", "voluntary_per_s")
    totals = {c: dict.fromkeys(keys, 0.0) for c in (before, after)}
    for name in names + ["all"]:
        row = {}
        for commit in (before, after):
            if name == "all":
                row[commit] = {k: v or None for k, v in totals[commit].items()}
                row[commit]["threads"] = None
                continue
            row[commit] = {k: figure(commit, name, k) for k in totals[commit]}
            row[commit]["threads"] = figure(commit, name, "threads")
            for key in totals[commit]:
                totals[commit][key] += row[commit][key] or 0.0
        b, a = row[before], row[after]
        threads = f"{fmt(b['threads'], 0)} / {fmt(a['threads'], 0)}" if name != "all" else ""
        label = f"sightd.{name}" if name not in ("forkserver", "resource_tracker", "all") else name
        lines.append(
            f"| {'**all (sum)**' if name == 'all' else label} | {fmt(b['cpu_percent'], 2)} | "
            f"{fmt(a['cpu_percent'], 2)} | {ratio(a['cpu_percent'], b['cpu_percent'])} | "
            f"{fmt(b['wakeups_per_s'])} | {fmt(a['wakeups_per_s'])} | "
            f"{ratio(a['wakeups_per_s'], b['wakeups_per_s'])} | "
            f"{fmt(b['voluntary_per_s'])} / {fmt(a['voluntary_per_s'])} | {threads} |"
        )
    restarted = [
        f"{r['commit'][:12]} {n}"
        for r in results["idle"]
        for n, f in r["components"].items()
        if f.get("restarted")
    ]
    if restarted:
        lines.append(f"\nrestarted or new during a window (left out): {', '.join(restarted)}")
    return lines


def latency_table(results: dict, before: str, after: str) -> list[str]:
    lines = [
        "| `sightd run`, 1 camera | labels/s before / after | p50 ms before | p50 ms after "
        "| p95 ms before | p95 ms after | p99 ms before | p99 ms after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in ("idle", "fast"):
        if not results[key]:
            continue
        fps = results[key][0]["fps"]
        m = {
            c: {
                k: median([r["latency"][k] for r in results[key] if r["commit"] == c])
                for k in ("labels_per_s", "p50_ms", "p95_ms", "p99_ms")
            }
            for c in (before, after)
        }
        b, a = m[before], m[after]
        lines.append(
            f"| {fps:g} fps | {fmt(b['labels_per_s'])} / {fmt(a['labels_per_s'])} | "
            f"{fmt(b['p50_ms'])} | {fmt(a['p50_ms'])} | {fmt(b['p95_ms'])} | "
            f"{fmt(a['p95_ms'])} | {fmt(b['p99_ms'])} | {fmt(a['p99_ms'])} |"
        )
    return lines


def pipeline_table(results: dict, before: str, after: str) -> list[str]:
    lines = ["", "benchmarks/pipeline_latency.py, each revision's own copy (median of runs):"]
    for commit in (before, after):
        runs = [r for r in results["pipeline"] if r["commit"] == commit]
        for r in runs:
            if "failed" in r:
                lines.append(f"- {commit[:12]}: failed: {r['failed']}")
        good = [r["scenarios"] for r in runs if "scenarios" in r]
        for name in good[0] if good else []:
            p50 = median([g[name]["p50_ms"] for g in good if name in g])
            p99 = median([g[name]["p99_ms"] for g in good if name in g])
            rate = median([g[name]["labels_per_s"] for g in good if name in g])
            lines.append(
                f"- {commit[:12]} {name}: {rate:.1f} labels/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms"
            )
    return lines


def report(results: dict) -> list[str]:
    before, after = results["before"]["commit"], results["after"]["commit"]
    lines = [
        f"before {before[:12]} ({results['before']['revision']}), "
        f"after {after[:12]} ({results['after']['revision']}); "
        f"{os.cpu_count()} CPUs; median of {results['repeats']} runs each; "
        f"model.engine {results.get('engine') or 'as each revision defaults'}",
        "",
        f"Idle cost at 2 fps, {results['seconds']:g} s window "
        "(CPU: % of one core; wakeups: context switches/s):",
        "",
        *idle_table(results, before, after),
        "",
        "Label latency (captured_at to receipt at a listener on the labels endpoint):",
        "",
        *latency_table(results, before, after),
    ]
    stops = {
        c: median(
            [r.get("stop_s") for k in ("idle", "fast") for r in results[k] if r["commit"] == c]
        )
        for c in (before, after)
    }
    lines += [
        "",
        f"SIGTERM to the supervisor's exit (every process stopped), median: "
        f"before {fmt(stops[before], 2)} s, after {fmt(stops[after], 2)} s",
    ]
    if results["pipeline"]:
        lines += pipeline_table(results, before, after)
    lines += ["", "runs in the order they ran (1-minute load average before -> after):"]
    runs = [(r, key) for key in ("idle", "fast", "pipeline") for r in results[key]]
    for r, key in sorted(runs, key=lambda run: run[0]["started"]):
        what = {"idle": "idle, 2 fps", "fast": f"latency, {r.get('fps', 0):g} fps"}
        code = f", exit {r['exit_code']} after {r['stop_s']:.2f} s" if "stop_s" in r else ""
        lines.append(
            f"- {what.get(key, 'pipeline_latency.py')} {r['commit'][:12]}: load "
            f"{r['load_before']:.2f} -> {r['load_after']:.2f}{code}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="3d35d26", help="git revision before the change")
    parser.add_argument("--after", default="HEAD", help="git revision after the change")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each revision")
    parser.add_argument("--seconds", type=float, default=60.0, help="idle window per run")
    parser.add_argument("--warmup", type=float, default=15.0, help="after the first label")
    parser.add_argument("--latency-fps", type=float, default=30.0, help="0: no second run")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="its window")
    parser.add_argument("--model", type=Path, help="a checkpoint (default: train one here)")
    parser.add_argument(
        "--engine",
        help="model.engine for a revision that has it (default: its own default, auto)",
    )
    parser.add_argument(
        "--pipeline-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also run each revision's benchmarks/pipeline_latency.py --seconds SECONDS",
    )
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    results = {"repeats": args.repeats, "seconds": args.seconds, "warmup": args.warmup}
    results["engine"] = args.engine
    results.update({"idle": [], "fast": [], "pipeline": [], "load_start": os.getloadavg()[0]})
    with tempfile.TemporaryDirectory(prefix="idle_cost-") as tmp:
        folder = Path(tmp)
        revs = [export(args.before, folder), export(args.after, folder)]
        results["before"], results["after"] = ({**r, "tree": str(r["tree"])} for r in revs)
        video = write_scene(folder / "scene.avi")
        if args.model:
            model = args.model.resolve()
        else:
            print("training the digits model (2 epochs) ...", flush=True)
            model = train_model(revs[-1]["tree"], folder)
        for repeat in range(args.repeats):  # before, after, before, after, ...
            for rev in revs:
                print(f"run {repeat + 1}: {rev['commit'][:12]} idle at 2 fps", flush=True)
                results["idle"].append(
                    run_once(rev, folder, video, model, 2.0, args, f"idle{repeat}")
                )
                if args.latency_fps:
                    print(f"run {repeat + 1}: {rev['commit'][:12]} at {args.latency_fps:g} fps")
                    results["fast"].append(
                        run_once(rev, folder, video, model, args.latency_fps, args, f"fast{repeat}")
                    )
                if args.pipeline_latency:
                    print(f"run {repeat + 1}: {rev['commit'][:12]} pipeline_latency.py")
                    results["pipeline"].append(
                        run_pipeline_latency(rev, folder, args.pipeline_latency, str(repeat))
                    )
    results["load_end"] = os.getloadavg()[0]
    print()
    print("\n".join(report(results)))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
