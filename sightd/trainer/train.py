"""`sightd train`: folder of images in, runs/<timestamp>/ with weights, metrics and plots out.

The loop reads top to bottom: load (decode once), split, fit with the best validation weights
kept, test, write. Every file is written atomically, so Ctrl-C leaves whole files or none.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sightd.atomic import atomic_symlink, atomic_write_text
from sightd.checkpoint import ModelInfo, save_checkpoint
from sightd.config import TrainConfig
from sightd.cpu import ThreadGovernor
from sightd.devices import resolve_device
from sightd.errors import SightdError
from sightd.model import create_model, model_names
from sightd.trainer.calibration import confidences, fit_temperature
from sightd.trainer.data import SPLIT_NAMES, ImageSet, load_folder, save_split, split_indices
from sightd.trainer.evaluate import EVAL_BATCH, autocast, to_input
from sightd.trainer.metrics import classification_report, expected_calibration_error
from sightd.trainer.plots import save_confusion_matrix, save_curves, save_reliability

AUTO_AUGMENT_BELOW = 100  # training images in the smallest class; digits has ~126 a class
SMALL_BATCH_FLOOR = 16  # a smaller set trains at batch n/8, but never below this
BATCH_NORM_IMAGES = 512  # training images whose statistics batch norm is given before validating


@dataclass
class Plan:
    """What the trainer chose for this data set, and why: said on its first line."""

    batch_size: int
    epochs: int
    steps: int
    augment: bool
    patience: int
    reason: str  # why augmentation is on or off

    def describe(self) -> str:
        return (
            f"batch {self.batch_size} x {self.epochs} epochs ({self.steps} steps), "
            f"augmentation {'on' if self.augment else 'off'} ({self.reason}), "
            f"early stop after {self.patience} epochs without progress"
        )


def plan_training(cfg: TrainConfig, train_labels: torch.Tensor, classes: int) -> Plan:
    """Enough optimiser steps whatever the size: a small set gets a smaller batch and more
    epochs (at least cfg.min_steps steps); min_steps 0 keeps batch_size and epochs as given."""
    n = len(train_labels)
    smallest = int(torch.bincount(train_labels, minlength=classes).min())
    batch = cfg.batch_size
    if cfg.min_steps:
        batch = min(cfg.batch_size, max(SMALL_BATCH_FLOOR, math.ceil(n / 8)))
    per_epoch = max(1, n // batch + (n % batch >= 2))  # a last batch of one is skipped
    epochs = cfg.epochs
    if cfg.min_steps:
        epochs = max(cfg.epochs, math.ceil(cfg.min_steps / per_epoch))
    if cfg.augment == "auto":
        augment = smallest < AUTO_AUGMENT_BELOW
        reason = f"auto: {smallest} training images in the smallest class, " + (
            f"under {AUTO_AUGMENT_BELOW}" if augment else f"{AUTO_AUGMENT_BELOW} or more"
        )
    else:
        augment, reason = bool(cfg.augment), "as configured"
    patience = cfg.patience or max(5, epochs // 3)
    return Plan(batch, epochs, per_epoch * epochs, augment, patience, reason)


def run_training(
    cfg: TrainConfig,
    data_dir: str | Path,
    run_dir: str | Path | None = None,
    progress_file: str | Path | None = None,
    link_latest: bool = True,
) -> Path:
    """Train on `data_dir`; return the run folder (model.safetensors, metrics.json, plots).

    progress_file: the plan, each epoch and the result as JSON lines (ProgressFile).
    link_latest: False leaves out_dir/latest where it is (the console deploys a run itself).
    """
    progress = ProgressFile(progress_file)
    if cfg.arch not in model_names():  # fail before minutes of decoding, not after
        raise SightdError(
            f"unknown model arch {cfg.arch!r}; choose one of {', '.join(model_names())}"
        )
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # weights, batch order and augmentation
    governor = ThreadGovernor() if device.type == "cpu" else None  # judges load from now on
    data_dir = Path(data_dir).resolve()
    cfg = cfg.model_copy(update={"data_dir": str(data_dir)})  # what metrics.json records
    data = load_folder(data_dir, cfg.image_size)
    split = split_indices(data.labels, data.classes, cfg.split, cfg.seed)
    train_set, val_set, test_set = (data.subset(split[name]) for name in SPLIT_NAMES)
    plan = plan_training(cfg, train_set.labels, len(data.classes))
    sizes = ", ".join(f"{name} {len(split[name])}" for name in SPLIT_NAMES)
    tqdm.write(
        f"{len(data.paths)} images, {len(data.classes)} classes ({sizes}); {cfg.arch} on "
        f"{device}; {plan.describe()}"
    )
    model = create_model(cfg.arch, len(data.classes))
    if cfg.init:
        from sightd.trainer.pretrained import load_init

        tqdm.write(
            f"started from ImageNet weights ({load_init(model, cfg.arch, cfg.init)} tensors)"
        )
    run_dir = _new_run_dir(Path(cfg.out_dir), run_dir)
    save_split(run_dir / "split.json", data, split, cfg.seed)
    progress.write(
        "plan",
        run_dir=str(run_dir),
        images=len(data.paths),
        classes=data.classes,
        arch=cfg.arch,
        device=str(device),
        **asdict(plan),
    )

    model = model.to(device, memory_format=torch.channels_last)
    history, train_seconds = fit(
        model,
        cfg,
        plan,
        train_set,
        val_set,
        device,
        governor,
        lambda row: progress.write("epoch", epochs=plan.epochs, **row),
    )
    test_logits = logits_of(model, test_set, cfg, device)
    report = classification_report(test_set.labels, test_logits.argmax(dim=1), data.classes)
    temperature = 1.0
    if cfg.calibrate:
        temperature = fit_temperature(logits_of(model, val_set, cfg, device), val_set.labels)
    before = confidences(test_logits, test_set.labels)
    after = confidences(test_logits, test_set.labels, temperature)

    info = ModelInfo(
        cfg.arch,
        data.classes,
        cfg.image_size,
        cfg.mean,
        cfg.std,
        report["accuracy"],
        temperature=temperature,
    )
    save_checkpoint(run_dir / "model.safetensors", model, info)
    seen = sum(row["images"] for row in history)
    metrics = {
        "test_accuracy": report["accuracy"],
        "train_images_per_s": seen / train_seconds if train_seconds else 0.0,
        "best_epoch": max(history, key=_progress)["epoch"],
        "images": {name: len(split[name]) for name in SPLIT_NAMES},
        "data_dir": str(data_dir),
        "device": str(device),
        "plan": asdict(plan),
        "calibration": {
            "temperature": temperature,
            "fitted_on": "val" if cfg.calibrate else None,
            "test_ece_before": expected_calibration_error(*before),
            "test_ece_after": expected_calibration_error(*after),
        },
        "config": cfg.model_dump(),
        "epochs": history,
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
    }
    _write_report(run_dir, metrics, data.classes)
    save_reliability(run_dir / "calibration.png", before, after)
    linked = link_latest and _point_latest_at(Path(cfg.out_dir), run_dir)
    where = f"{run_dir} ({Path(cfg.out_dir) / 'latest'} points here)" if linked else run_dir
    ece = metrics["calibration"]
    progress.write("done", run_dir=str(run_dir), test_accuracy=report["accuracy"], calibration=ece)
    tqdm.write(
        f"test accuracy {report['accuracy']:.4f}, calibration error "
        f"{ece['test_ece_before']:.3f} -> {ece['test_ece_after']:.3f} "
        f"(temperature {temperature:.2f}); wrote {where}"
    )
    return run_dir


def fit(
    model,
    cfg: TrainConfig,
    plan: Plan,
    train_set: ImageSet,
    val_set: ImageSet,
    device,
    governor: ThreadGovernor | None = None,
    on_epoch: Callable[[dict], None] | None = None,
):
    """Train as planned; leave the best-validation weights in `model`.

    On a CPU the governor sets torch's threads before each epoch to the cores other processes
    leave free: a thread on a core taken by another process stalls every op for all of them.

    Before each validation batch norm gets the statistics of the current weights on clean
    training images (its running averages trail the weights, badly so after a few dozen
    steps on augmented batches), so what is validated is what will be saved and served.
    `on_epoch` is given each epoch's row (with the seconds elapsed) as it is printed.
    Returns (one dict per epoch, seconds spent in training steps).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    augment = None
    if plan.augment:
        from sightd.trainer.augment import Augment

        augment = Augment(flip=cfg.flip)
    images = train_set.images.to(device)  # uint8 is small: the whole cache fits on the device
    labels = train_set.labels.to(device)
    statistics_images = images[torch.randperm(len(images))[:BATCH_NORM_IMAGES].to(device)]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_decay(step, plan.steps)
    )
    history, best, best_state, since_best = [], None, None, 0
    start, train_seconds = time.perf_counter(), 0.0
    for epoch in range(1, plan.epochs + 1):
        if governor is not None:
            governor.adapt()
        tick = time.perf_counter()
        loss, seen = train_epoch(
            model, optimizer, images, labels, cfg, plan, augment, device, epoch, schedule
        )
        train_seconds += time.perf_counter() - tick
        refresh_batch_norm(model, statistics_images, cfg, device)
        val_logits = logits_of(model, val_set, cfg, device)
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "val_accuracy": float((val_logits.argmax(dim=1) == val_set.labels).float().mean()),
            "val_loss": float(F.cross_entropy(val_logits, val_set.labels)),
            "images": seen,
        }
        history.append(row)
        if best is None or _progress(row) > _progress(best):
            best, best_state, since_best = row, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
        elapsed = time.perf_counter() - start
        tqdm.write(
            f"epoch {epoch:>3}/{plan.epochs}  train loss {loss:.4f}  val accuracy "
            f"{row['val_accuracy']:.4f}  val loss {row['val_loss']:.4f}  elapsed {elapsed:.1f}s"
        )
        if on_epoch is not None:
            on_epoch({**row, "elapsed_s": round(elapsed, 3)})
        if since_best >= plan.patience and epoch < plan.epochs:
            tqdm.write(
                f"stopping early: no progress for {since_best} epochs; best epoch {best['epoch']}"
            )
            break
    model.load_state_dict(best_state)
    return history, train_seconds


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


def _progress(row: dict) -> tuple[float, float]:
    """Better validation: higher accuracy, then lower loss (a tie on a small split is common)."""
    return row["val_accuracy"], -row["val_loss"]


@torch.no_grad()
def refresh_batch_norm(model, images: torch.Tensor, cfg: TrainConfig, device) -> None:
    """Batch norm's running statistics recomputed for the current weights (a plain average over
    `images`, not the trailing exponential one), leaving the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: a cumulative average over every batch seen
    model.train()
    for batch in images.split(cfg.batch_size):
        if len(batch) >= 2:
            with autocast(device):
                model(to_input(batch, cfg.mean, cfg.std))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


@torch.inference_mode()
def logits_of(model, data: ImageSet, cfg: TrainConfig, device) -> torch.Tensor:
    """float32 logits of every image of `data`, on the CPU, as validation and test see them."""
    model.eval()
    out = [torch.empty(0, 0)]
    for images in data.images.split(EVAL_BATCH):
        with autocast(device):
            out.append(model(to_input(images.to(device), cfg.mean, cfg.std)).float().cpu())
    return torch.cat(out[1:]) if len(out) > 1 else torch.empty(0, 0)


def train_epoch(
    model, optimizer, images, labels, cfg, plan, augment, device, epoch, schedule=None
) -> tuple[float, int]:
    """One shuffled pass; returns (mean training loss, images seen)."""
    model.train()
    order = torch.randperm(len(labels), device=labels.device)
    total, seen = torch.zeros((), device=device), 0
    batches = order.split(plan.batch_size)
    for index in tqdm(batches, desc=f"epoch {epoch}/{plan.epochs}", leave=False, disable=None):
        if len(index) < 2:
            continue  # batch norm cannot train on a single image
        batch = images[index]
        if augment is not None:
            batch = augment(batch)
        with autocast(device):
            loss = F.cross_entropy(model(to_input(batch, cfg.mean, cfg.std)), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        total += loss.detach() * len(index)  # no .item(): keeps the GPU from waiting on us
        seen += len(index)
    return float(total) / max(seen, 1), seen


def cosine_decay(step: int, total_steps: int) -> float:
    """Learning-rate factor: 1 at the start, falling along a half cosine to 0 at the end.

    A constant rate (the seed's) leaves validation accuracy jumping by several points from
    epoch to epoch; decaying it lets the last epochs settle into a minimum.
    """
    return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def _write_report(run_dir: Path, metrics: dict, classes: list[str]) -> None:
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    save_curves(run_dir / "curves.png", metrics["epochs"])
    matrix = metrics["confusion_matrix"]
    save_confusion_matrix(run_dir / "confusion_matrix.png", matrix, classes, "test split")


def _new_run_dir(out_dir: Path, run_dir: str | Path | None) -> Path:
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


def _point_latest_at(out_dir: Path, run_dir: Path) -> bool:
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
