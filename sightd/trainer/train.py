"""`sightd train`: folder of images in, runs/<timestamp>/ with weights, metrics and plots out.

The loop reads top to bottom: load (decode once), split, fit with the best validation weights
kept, test, write. Every file is written atomically, so Ctrl-C leaves whole files or none.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sightd.checkpoint import ModelInfo, save_checkpoint
from sightd.config import TrainConfig
from sightd.cpu import ThreadGovernor
from sightd.devices import resolve_device
from sightd.errors import SightdError
from sightd.model import create_model, model_names
from sightd.trainer import distributed
from sightd.trainer.calibration import confidences, fit_temperature
from sightd.trainer.data import (
    SPLIT_NAMES,
    ImageSet,
    bar_off,
    load_folder,
    save_split,
    split_indices,
)
from sightd.trainer.evaluate import EVAL_BATCH, autocast, to_input
from sightd.trainer.metrics import classification_report, expected_calibration_error
from sightd.trainer.plots import save_reliability
from sightd.trainer.run_folder import ProgressFile, new_run_dir, point_latest_at, write_report

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
    epochs (at least cfg.min_steps steps); min_steps 0 keeps batch_size and epochs as given.

    The batch is the global one: with several processes each takes a share of every step."""
    n = len(train_labels)
    smallest = int(torch.bincount(train_labels, minlength=classes).min())
    batch = cfg.batch_size
    if cfg.min_steps:
        batch = min(cfg.batch_size, max(SMALL_BATCH_FLOOR, math.ceil(n / 8)))
    # a last batch too small to share out (one image in one process) is skipped
    per_epoch = max(1, n // batch + (n % batch >= distributed.smallest_batch()))
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
) -> Path | None:
    """Train on `data_dir`; return the run folder (model.safetensors, metrics.json, plots).

    In a process group every rank calls this; rank 0 writes the folder and returns it, the
    others return None.
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
    processes = f" x {distributed.world()} processes" if distributed.world() > 1 else ""
    distributed.say(
        f"{len(data.paths)} images, {len(data.classes)} classes ({sizes}); {cfg.arch} on "
        f"{device}{processes}; {plan.describe()}"
    )
    model = create_model(cfg.arch, len(data.classes))
    if cfg.init:
        from sightd.trainer.pretrained import load_init

        distributed.say(
            f"started from ImageNet weights ({load_init(model, cfg.arch, cfg.init)} tensors)"
        )
    if not distributed.is_main():  # the other ranks train and write nothing
        progress, run_dir = ProgressFile(None), None
    else:
        run_dir = new_run_dir(Path(cfg.out_dir), run_dir)
        save_split(run_dir / "split.json", data, split, cfg.seed)
    progress.write(
        "plan",
        run_dir=str(run_dir),
        images=len(data.paths),
        classes=data.classes,
        arch=cfg.arch,
        device=str(device),
        processes=distributed.world(),
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
    if not distributed.is_main():
        return None
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
        "processes": distributed.world(),
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
    write_report(run_dir, metrics, data.classes)
    save_reliability(run_dir / "calibration.png", before, after)
    linked = link_latest and point_latest_at(Path(cfg.out_dir), run_dir)
    where = f"{run_dir} ({Path(cfg.out_dir) / 'latest'} points here)" if linked else run_dir
    ece = metrics["calibration"]
    progress.write("done", run_dir=str(run_dir), test_accuracy=report["accuracy"], calibration=ece)
    distributed.say(
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

    In a process group (distributed.py) every rank runs this: each steps on its share of the
    same global batches and scores its share of validation, and every figure a decision rests
    on is summed over the ranks, so all of them stop at the same epoch and keep the same one.
    """
    stepper = distributed.wrap(model, device)  # DDP where there are several ranks
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    augment = None
    if plan.augment:
        from sightd.trainer.augment import Augment

        augment = Augment(flip=cfg.flip)
    images = train_set.images.to(device)  # uint8 is small: the whole cache fits on the device
    labels = train_set.labels.to(device)
    statistics_images = images[torch.randperm(len(images))[:BATCH_NORM_IMAGES].to(device)]
    shuffle = distributed.shared_generator(cfg.seed)  # the same global batches on every rank
    distributed.seed_this_rank(cfg.seed)  # but augmentation drawn apart
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
            stepper, optimizer, images, labels, cfg, plan, augment, device, epoch, schedule, shuffle
        )
        train_seconds += time.perf_counter() - tick
        refresh_batch_norm(model, statistics_images, cfg, device)
        val_accuracy, val_loss = validate(model, val_set, cfg, device)
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "val_accuracy": val_accuracy,
            "val_loss": val_loss,
            "images": seen,
        }
        history.append(row)
        if best is None or _progress(row) > _progress(best):
            best, best_state, since_best = row, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
        elapsed = time.perf_counter() - start
        distributed.say(
            f"epoch {epoch:>3}/{plan.epochs}  train loss {loss:.4f}  val accuracy "
            f"{row['val_accuracy']:.4f}  val loss {row['val_loss']:.4f}  elapsed {elapsed:.1f}s"
        )
        if on_epoch is not None:
            on_epoch({**row, "elapsed_s": round(elapsed, 3)})
        if since_best >= plan.patience and epoch < plan.epochs:
            distributed.say(
                f"stopping early: no progress for {since_best} epochs; best epoch {best['epoch']}"
            )
            break
    model.load_state_dict(best_state)
    return history, train_seconds


def _progress(row: dict) -> tuple[float, float]:
    """Better validation: higher accuracy, then lower loss (a tie on a small split is common)."""
    return row["val_accuracy"], -row["val_loss"]


def validate(model, val_set: ImageSet, cfg: TrainConfig, device) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on the validation split. With several ranks each scores
    its share and the sums are added up: every rank gets the same two figures."""
    part = val_set.subset(my_rows(len(val_set.labels))) if distributed.world() > 1 else val_set
    correct, loss = 0.0, 0.0
    if len(part.labels):
        logits = logits_of(model, part, cfg, device)
        correct = float((logits.argmax(dim=1) == part.labels).sum())
        loss = float(F.cross_entropy(logits, part.labels, reduction="sum"))
    correct, loss = distributed.all_sum([correct, loss], device)
    return correct / len(val_set.labels), loss / len(val_set.labels)


def my_rows(n: int):
    """This rank's consecutive share of rows 0..n-1."""
    return distributed.my_share(torch.arange(n)).numpy()


@torch.no_grad()
def refresh_batch_norm(model, images: torch.Tensor, cfg: TrainConfig, device) -> None:
    """Batch norm's running statistics recomputed for the current weights (a plain average over
    `images`, not the trailing exponential one), leaving the model in eval mode.

    Several ranks share each batch out as in training and average what they found."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # None: a cumulative average over every batch seen
    model.train()
    for batch in images.split(cfg.batch_size):
        if len(batch) >= distributed.smallest_batch():
            with autocast(device):
                model(to_input(distributed.my_share(batch), cfg.mean, cfg.std))
    distributed.average_batch_norm(model)
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
    model, optimizer, images, labels, cfg, plan, augment, device, epoch, schedule=None, shuffle=None
) -> tuple[float, int]:
    """One shuffled pass; returns (mean training loss, images seen, by every rank together).

    `shuffle`: a generator that draws the same order on every rank (None: the global one)."""
    model.train()
    total, seen = torch.zeros((), device=device), 0
    steps = distributed.epoch_batches(len(labels), plan.batch_size, shuffle, labels.device)
    for index, weight in tqdm(
        steps, desc=f"epoch {epoch}/{plan.epochs}", leave=False, disable=bar_off()
    ):
        batch = images[index]
        if augment is not None:
            batch = augment(batch)
        with autocast(device):
            loss = F.cross_entropy(model(to_input(batch, cfg.mean, cfg.std)), labels[index])
        optimizer.zero_grad(set_to_none=True)
        (loss if weight == 1 else loss * weight).backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        total += loss.detach() * len(index)  # no .item(): keeps the GPU from waiting on us
        seen += len(index)
    total, seen = distributed.all_sum([float(total), seen], device)
    return total / max(seen, 1), int(seen)


def cosine_decay(step: int, total_steps: int) -> float:
    """Learning-rate factor: 1 at the start, falling along a half cosine to 0 at the end.

    A constant rate (the seed's) leaves validation accuracy jumping by several points from
    epoch to epoch; decaying it lets the last epochs settle into a minimum.
    """
    return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
