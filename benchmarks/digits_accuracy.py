"""Test accuracy and peak memory of `sightd train` with default settings on the digits dataset.

Runs the real command in a child process (so its peak RSS is the command's own), reads the
run's metrics.json and prints one line per figure. Usage:

    python benchmarks/digits_accuracy.py [--epochs N] [--seed N] [--augment auto|on|off]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="default: the config default (15)")
    parser.add_argument("--seed", type=int, help="default: the config default (0)")
    parser.add_argument(
        "--augment", choices=["auto", "on", "off"], help="default: auto (off for digits)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([*SIGHTD, "dataset", "digits", str(tmp / "digits")], check=True)
        command = [*SIGHTD, "train", str(tmp / "digits"), "--out", str(tmp / "run")]
        command += ["--epochs", str(args.epochs)] if args.epochs else []
        command += ["--seed", str(args.seed)] if args.seed is not None else []
        command += ["--augment", args.augment] if args.augment else []
        # An empty config: the built-in defaults, whatever ./config.yaml says.
        config = tmp / "empty.yaml"
        config.write_text("{}\n")
        command += ["-c", str(config)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
        metrics = json.loads((tmp / "run" / "metrics.json").read_text())

    cfg = metrics["config"]
    print(
        f"digits: {sum(metrics['images'].values())} images, arch {cfg['arch']}, "
        f"epochs {cfg['epochs']}, augment {cfg['augment']}, seed {cfg['seed']}, "
        f"device {metrics['device']}"
    )
    print(
        f"test accuracy: {metrics['test_accuracy']:.4f} ({metrics['images']['test']} images; "
        f"best epoch {metrics['best_epoch']})"
    )
    print(f"training images/s: {metrics['train_images_per_s']:.0f}")
    note = "" if peak_kib > before else " (an earlier child was bigger: figure unreliable)"
    print(f"peak memory (RSS) of sightd train: {peak_kib / 1024:.0f} MiB{note}")
    print(f"  of which importing its libraries (torch, OpenCV...): {import_rss():.0f} MiB")
    print(f"wall time of sightd train: {seconds:.1f} s")


SIGHTD = [sys.executable, "-m", "sightd"]


def import_rss() -> float:
    """Peak RSS in MiB of a process that only imports the trainer: the floor under any run."""
    code = "import resource as r, sightd.trainer.train; print(r.getrusage(r.RUSAGE_SELF).ru_maxrss)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout) / 1024


if __name__ == "__main__":
    main()
