"""`sightd train`: folder of images in, runs/<timestamp>/ with weights, metrics and plots out.

The loop reads top to bottom: load (decode once), split, fit with the best validation weights
kept, test, write. Every file is written atomically, so Ctrl-C leaves whole files or none.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sightd.atomic import atomic_write_text
from sightd.checkpoint import ModelInfo, save_checkpoint
from sightd.config import TrainConfig
from sightd.devices import resolve_device
from sightd.errors import SightdError
from sightd.model import create_model, model_names
from sightd.trainer.data import SPLIT_NAMES, ImageSet, load_folder, save_split, split_indices
from sightd.trainer.evaluate import autocast, predict_labels, to_input
from sightd.trainer.metrics import classification_report
from sightd.trainer.plots import save_confusion_matrix, save_curves


def run_training(cfg: TrainConfig, data_dir: str | Path, run_dir: str | Path | None = None) -> Path:
    """Train on `data_dir`; return the run folder (model.safetensors, metrics.json, plots)."""
    if cfg.arch not in model_names():  # fail before minutes of decoding, not after
        raise SightdError(
            f"unknown model arch {cfg.arch!r}; choose one of {', '.join(model_names())}"
        )
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # weights, batch order and augmentation
    data = load_folder(data_dir, cfg.image_size)
    split = split_indices(data.labels, data.classes, cfg.split, cfg.seed)
    train_set, val_set, test_set = (data.subset(split[name]) for name in SPLIT_NAMES)
    run_dir = _new_run_dir(Path(cfg.out_dir), run_dir)
    save_split(run_dir / "split.json", data, split, cfg.seed)
    sizes = ", ".join(f"{name} {len(split[name])}" for name in SPLIT_NAMES)
    tqdm.write(
        f"{len(data.paths)} images, {len(data.classes)} classes; {sizes}; {cfg.arch} on {device}"
    )

    model = create_model(cfg.arch, len(data.classes)).to(device, memory_format=torch.channels_last)
    history, train_seconds = fit(model, cfg, train_set, val_set, device)
    predicted = predict_labels(model, test_set, cfg.mean, cfg.std, device)
    report = classification_report(test_set.labels, predicted, data.classes)

    info = ModelInfo(cfg.arch, data.classes, cfg.image_size, cfg.mean, cfg.std, report["accuracy"])
    save_checkpoint(run_dir / "model.safetensors", model, info)
    seen = sum(row["images"] for row in history)
    metrics = {
        "test_accuracy": report["accuracy"],
        "train_images_per_s": seen / train_seconds if train_seconds else 0.0,
        "best_epoch": max(history, key=lambda row: row["val_accuracy"])["epoch"],
        "images": {name: len(split[name]) for name in SPLIT_NAMES},
        "data_dir": str(data_dir),
        "device": str(device),
        "config": cfg.model_dump(),
        "epochs": history,
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
    }
    _write_report(run_dir, metrics, data.classes)
    linked = _point_latest_at(Path(cfg.out_dir), run_dir)
    where = f"{run_dir} ({Path(cfg.out_dir) / 'latest'} points here)" if linked else run_dir
    tqdm.write(f"test accuracy {report['accuracy']:.4f}; wrote {where}")
    return run_dir


def fit(model, cfg: TrainConfig, train_set: ImageSet, val_set: ImageSet, device):
    """Train for cfg.epochs; leave the best-validation weights in `model`.

    Returns (one dict per epoch, seconds spent in training steps).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    augment = None
    if cfg.augment:  # imported here: torchvision takes seconds to import, off by default
        from sightd.trainer.augment import Augment

        augment = Augment()
    images = train_set.images.to(device)  # uint8 is small: the whole cache fits on the device
    labels = train_set.labels.to(device)
    steps_per_epoch = math.ceil(len(labels) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_decay(step, steps_per_epoch * cfg.epochs)
    )
    history, best_accuracy, best_state = [], -1.0, None
    start, train_seconds = time.perf_counter(), 0.0
    for epoch in range(1, cfg.epochs + 1):
        tick = time.perf_counter()
        loss, seen = train_epoch(
            model, optimizer, images, labels, cfg, augment, device, epoch, schedule
        )
        train_seconds += time.perf_counter() - tick
        accuracy = _accuracy(model, val_set, cfg, device)
        if accuracy > best_accuracy:  # ties keep the earlier, less fitted, weights
            best_accuracy, best_state = accuracy, copy.deepcopy(model.state_dict())
        elapsed = time.perf_counter() - start
        history.append(
            {"epoch": epoch, "train_loss": loss, "val_accuracy": accuracy, "images": seen}
        )
        tqdm.write(
            f"epoch {epoch:>3}/{cfg.epochs}  train loss {loss:.4f}  "
            f"val accuracy {accuracy:.4f}  elapsed {elapsed:.1f}s"
        )
    model.load_state_dict(best_state)
    return history, train_seconds


def train_epoch(
    model, optimizer, images, labels, cfg, augment, device, epoch, schedule=None
) -> tuple[float, int]:
    """One shuffled pass; returns (mean training loss, images seen)."""
    model.train()
    order = torch.randperm(len(labels), device=labels.device)
    total, seen = torch.zeros((), device=device), 0
    batches = order.split(cfg.batch_size)
    for index in tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=None):
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


def _accuracy(model, data: ImageSet, cfg: TrainConfig, device) -> float:
    predicted = predict_labels(model, data, cfg.mean, cfg.std, device)
    return float((predicted == data.labels).float().mean()) if len(predicted) else 0.0


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
    latest, temp = out_dir / "latest", out_dir / f".latest.{os.getpid()}.tmp"
    if latest.exists() and not latest.is_symlink():
        raise SightdError(
            f"{latest} exists and is not a symlink; move it away so it can point at the newest run"
        )
    temp.unlink(missing_ok=True)
    os.symlink(run_dir.name, temp)
    os.replace(temp, latest)
    return True
