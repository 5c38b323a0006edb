"""A run folder: its name, its files written atomically, and runs/latest pointed at it.

Only one process writes it: in a process group that is rank 0 (distributed.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sightd.atomic import atomic_symlink, atomic_write_text
from sightd.errors import SightdError
from sightd.trainer.plots import save_confusion_matrix, save_curves


class ProgressFile:
    """`--progress-file`: what the run prints, as JSON lines for a program to follow (the
    console's Teach page): {"event": "plan" | "epoch" | "done", ...}. The whole file is
    rewritten atomically at each line, so a reader never sees half of one."""

    def __init__(self, path: str | Path | None):
        self.path, self.lines = path, []

    def write(self, event: str, **fields) -> None:
        if self.path is None:
            return
        self.lines.append(json.dumps({"event": event, **fields}))
        atomic_write_text(self.path, "\n".join(self.lines) + "\n")


def write_report(run_dir: Path, metrics: dict, classes: list[str]) -> None:
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    save_curves(run_dir / "curves.png", metrics["epochs"])
    matrix = metrics["confusion_matrix"]
    save_confusion_matrix(run_dir / "confusion_matrix.png", matrix, classes, "test split")


def new_run_dir(out_dir: Path, run_dir: str | Path | None) -> Path:
    if run_dir is not None:
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 1
    while True:  # two runs started in the same second get -2, -3, ...
        path = out_dir / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1


def point_latest_at(out_dir: Path, run_dir: Path) -> bool:
    """out_dir/latest -> run_dir, swapped atomically (a reader never sees it missing).

    Only runs inside out_dir are linked: `--out elsewhere` must not move what the daemon loads.
    """
    if run_dir.resolve().parent != out_dir.resolve():
        return False
    latest = out_dir / "latest"
    if latest.exists() and not latest.is_symlink():
        raise SightdError(
            f"{latest} exists and is not a symlink; move it away so it can point at the newest run"
        )
    atomic_symlink(latest, run_dir.name)
    return True
