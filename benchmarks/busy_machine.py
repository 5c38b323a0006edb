"""Training and the worker's forward pass alone and beside one busy process (issue 10).

On the digits set (written here), each measurement runs alone and then beside one CPU-bound
competitor (`python3 -c 'while True: pass'`, started here and killed after), interleaved, N
times:

- training: `sightd train DATA --epochs E` in its own process; wall time, and its CPU time
  (user + system of all its threads, from wait4). Policy `installed` is the trainer as it is
  (its ThreadGovernor's choice per epoch is logged); `before` is issue 10's starting point for
  comparison: torch's default threads whatever the load, and libgomp's default spinning;
- forward: the worker's path, in its own process: limit_threads(model.threads) as the worker
  calls it, then Classifier.predict on one 640x480 frame, `--calls` times; per-call wall time
  (median) and CPU time (mean).

Other people's work on the machine skews every figure, so each run prints the load average
and how many cores' worth other processes used while it ran (all busy time minus the measured
process and the competitor); trust runs where that stays near 0 (`--quiet-wait S` waits for
such a moment before each run).
Usage: python benchmarks/busy_machine.py [--repeats 2] [--epochs 3] [--calls 300]
       [--policy installed|before|both] [--quiet-wait S] [--run-limit S] [--out results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sightd.cpu import busy_ticks, own_ticks, usable_cpus

BUSY = [sys.executable, "-c", "while True: pass"]
HZ = os.sysconf("SC_CLK_TCK")
CPU_GROWTH_LIMIT = 1.1  # "CPU time does not grow": within the noise of a 2-core VM
WALL_TARGET = 2.2
CUT_FORWARD = {"call_ms": float("inf"), "cpu_ms": float("inf")}  # a forward run killed at the limit
QUIET_CORES = 0.3  # --quiet-wait: other processes' use below which the machine counts as idle
SHIM = """
import sys
import sightd.cpu
from sightd.cli import main

adapt = sightd.cpu.ThreadGovernor.adapt

def before(self):  # issue 10's starting point: torch's default threads, whatever the load
    return self.max_threads

def chosen(self):
    threads = (before if policy == "before" else adapt)(self)
    print(f"governor: {threads} threads, others {self.others_busy or 0:.2f} cores",
          file=sys.stderr)
    return threads

policy = sys.argv.pop(1)
sightd.cpu.ThreadGovernor.adapt = chosen
sys.argv[0] = "sightd"
main()
"""
BEFORE_ENV = {"GOMP_SPINCOUNT": "300000"}  # libgomp's default spinning, overriding passive


def proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return own_ticks(f.read())
    except OSError:
        return 0


def machine_ticks() -> int:
    with open("/proc/stat") as f:
        return busy_ticks(f.read(), usable_cpus())


@contextlib.contextmanager
def competitor(loaded: bool):
    """Yields a function giving the competitor's CPU ticks so far (0 when alone)."""
    if not loaded:
        yield lambda: 0
        return
    # A session of its own, as another program has: with sched_autogroup (on here) the scheduler
    # shares the cores between sessions, and in ours it would take half the training's share.
    busy = subprocess.Popen(BUSY, start_new_session=True)
    time.sleep(0.2)  # running, not still starting, when the measurement begins
    try:
        yield lambda: proc_ticks(busy.pid)
    finally:
        busy.kill()
        busy.wait()


def wait_for_quiet(limit_s: float) -> None:
    """Wait up to limit_s for other processes to leave the cores nearly idle (2 s samples)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = machine_ticks()
        time.sleep(2.0)
        if (machine_ticks() - before) / HZ / 2.0 < QUIET_CORES:
            return


def measure(command: list[str], loaded: bool, log: Path, args, env=None) -> dict:
    """Run `command` (alone or beside the competitor): wall, its CPU, others' cores.

    A run still going after args.run_limit seconds is killed: its wall time is then a floor.
    """
    wait_for_quiet(args.quiet_wait)
    with competitor(loaded) as competitor_ticks, open(log, "w") as out:
        machine0, rival0, start = machine_ticks(), competitor_ticks(), time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        timer = threading.Timer(args.run_limit, child.kill)
        timer.start()
        _, status, usage = os.wait4(child.pid, 0)
        timer.cancel()
        wall = time.perf_counter() - start
        rival = competitor_ticks() - rival0
        machine = machine_ticks() - machine0
    cut = os.WIFSIGNALED(status)
    if status != 0 and not cut:
        sys.exit(f"{' '.join(command[:4])} ... failed:\n{log.read_text()[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, (machine - rival) / HZ - cpu) / wall
    figures = {"wall_s": wall, "cpu_s": cpu, "others_cores": others, "cut": cut}
    return figures | {"load": os.getloadavg()[0]}


def train_command(policy: str, data: Path, run_dir: Path, epochs: int) -> list[str]:
    flags = ["--epochs", str(epochs), "--out", str(run_dir)]
    help_text = subprocess.run(
        [sys.executable, "-m", "sightd", "train", "--help"], capture_output=True, text=True
    ).stdout
    if "--min-steps" in help_text:  # a trainer that stretches short runs: keep E epochs
        flags += ["--min-steps", "0"]
    return [sys.executable, "-c", SHIM, policy, "train", str(data), *flags]


def forward_child(checkpoint: str, calls: int) -> None:
    """In a fresh process, as the worker: its thread limit, then batch-1 predictions."""
    import numpy as np

    from sightd.classifier import Classifier
    from sightd.config import ModelConfig
    from sightd.publishers.inference import limit_threads

    limit_threads(ModelConfig().threads)
    classifier = Classifier.load(checkpoint, "cpu")
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for _ in range(20):  # warm-up: first calls allocate and pick kernels
        classifier.predict([frame])
    times, cpu = [], time.process_time()
    for _ in range(calls):
        tick = time.perf_counter()
        classifier.predict([frame])
        times.append(time.perf_counter() - tick)
    cpu = (time.process_time() - cpu) / calls
    print(json.dumps({"call_ms": 1000 * statistics.median(times), "cpu_ms": 1000 * cpu}))


def ratio_row(name: str, unit: str, key: str, alone: list[dict], loaded: list[dict]) -> str:
    """One table row: medians alone and beside the competitor, their ratio, the verdict."""
    a, b = (statistics.median(r[key] for r in side) for side in (alone, loaded))
    others = "/".join(
        f"{statistics.median(r['others_cores'] for r in side):.1f}" for side in (alone, loaded)
    )
    target = CPU_GROWTH_LIMIT if key.startswith("cpu") else WALL_TARGET
    if any(r["cut"] for r in alone + loaded):
        verdict = "cut at --run-limit: floors, not judged"
    else:
        verdict = "ok" if b / a <= target else "OVER"
    return (
        f"{name:<26} {a:>9.2f} {unit:<3} {b:>9.2f} {unit:<3} {b / a:>6.2f}x  {others:>7}  "
        f"{target}x {verdict}"
    )


def run_all(args, policies: list[str], tmp: Path) -> list[dict]:
    """Every measurement, alone then beside the competitor, interleaved, args.repeats times."""
    from sightd.trainer.digits import write_digits_dataset

    data, runs = write_digits_dataset(tmp / "digits"), []
    for repeat in range(args.repeats):
        for policy, loaded in ((p, side) for p in policies for side in (False, True)):
            run_dir = tmp / f"{policy}-{repeat}-{int(loaded)}"
            command = train_command(policy, data, run_dir, args.epochs)
            log = tmp / f"{run_dir.name}.log"
            env = os.environ | BEFORE_ENV if policy == "before" else None
            figures = measure(command, loaded, log, args, env)
            threads = [int(w) for w in re.findall(r"governor: (\d+) threads", log.read_text())]
            runs.append({"what": f"train ({policy})", "loaded": loaded, **figures})
            runs[-1] |= {"threads": threads} if threads else {}
            report(runs[-1])
    checkpoint = next(tmp.glob("*/model.safetensors"), None)  # any finished run's
    if checkpoint is None:
        sys.exit("no training run finished within --run-limit: nothing to run forward passes on")
    command = [sys.executable, __file__, "forward", str(checkpoint), str(args.calls)]
    for repeat in range(args.repeats):
        for loaded in (False, True):
            log = tmp / f"forward-{repeat}-{int(loaded)}.log"
            figures = measure(command, loaded, log, args)
            lines = log.read_text().strip().splitlines()
            child = json.loads(lines[-1]) if not figures["cut"] else CUT_FORWARD
            runs.append({"what": "forward", "loaded": loaded, **figures, **child})
            report(runs[-1])
    return runs


def main() -> None:
    if sys.argv[1:2] == ["forward"]:
        return forward_child(sys.argv[2], int(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--policy", choices=["installed", "before", "both"], default="installed")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="before each run, wait up to S seconds for other processes to go idle",
    )
    parser.add_argument(
        "--run-limit",
        type=float,
        default=180.0,
        metavar="S",
        help="kill a run after S seconds (its time then counts as S: a floor)",
    )
    parser.add_argument("--out", type=Path, help="also write every run's figures as JSON")
    args = parser.parse_args()
    policies = ["installed", "before"] if args.policy == "both" else [args.policy]
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_all(args, policies, Path(tmp))
    print_table(runs, policies, args)
    if args.out:
        settings = vars(args) | {"out": str(args.out)}
        args.out.write_text(json.dumps({"args": settings, "runs": runs}, indent=1) + "\n")


def report(run: dict) -> None:
    extra = f"  {run['call_ms']:.2f} ms/call" if "call_ms" in run else ""
    extra += f"  threads {run['threads']}" if "threads" in run else ""
    extra += "  CUT at --run-limit" if run["cut"] else ""
    print(
        f"{run['what']:<18} {'beside busy' if run['loaded'] else 'alone':<11}  wall "
        f"{run['wall_s']:6.2f} s  cpu {run['cpu_s']:6.2f} s{extra}  load {run['load']:.1f}, "
        f"others {run['others_cores']:.2f} cores",
        flush=True,
    )


def print_table(runs: list[dict], policies: list[str], args) -> None:
    rows = [(f"train ({p})", k, "s") for p in policies for k in ("wall_s", "cpu_s")]
    rows += [("forward", "call_ms", "ms"), ("forward", "cpu_ms", "ms")]
    print(
        f"\n{os.cpu_count()} cores, digits, {args.epochs} epochs, {args.repeats} repeats "
        f"(medians), forward: batch 1, {args.calls} calls; others: cores other processes used\n"
        f"{'':<26} {'alone':>13} {'beside 1 busy':>13} {'ratio':>7}  {'others':>7}  at most"
    )
    for what, key, unit in rows:
        alone, loaded = (
            [r for r in runs if r["what"] == what and r["loaded"] == side] for side in (0, 1)
        )
        name = f"{what} {'CPU' if key.startswith('cpu') else 'wall'}"
        print(ratio_row(name, unit, key, alone, loaded))


if __name__ == "__main__":
    main()
