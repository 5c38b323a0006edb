"""Training images/s: sightd's loop against a seed-faithful baseline, in the same process.

Both train the same model with the same batch size, optimiser and loss on the same folder of
640x480 JPEG photos (synthetic but photo-like: smooth light, textured shapes, sensor noise),
written by this script. Both decode every file once, and that time is counted:

- baseline (the seed's pipeline): cv2.imread every file into a list of full-size numpy
  arrays, then per item numpy -> PIL -> Resize(64) -> ToTensor -> Normalize in a Dataset and
  a DataLoader (batch 64, shuffled); float32 NCHW model.
- sightd: sightd.trainer.data.decode_files (decode + resize once, in threads, to a uint8
  cache), then sightd.trainer.train.train_epoch with the default settings (no augmentation,
  like the baseline): channels_last, and bfloat16 autocast where the hardware has it. A third
  run repeats sightd with autocast off, to show what the cache and layout give alone.

Figures: end-to-end (decode + all epochs) and steady state (median epoch after the first).
Other work on the machine skews both (unevenly: it hurts multi-threaded maths most), so the
load average is printed; trust a run whose load stayed below the number of cores.
Usage: python benchmarks/train_throughput.py [--images 640] [--epochs 3] [--arch seed] [--augment]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from sightd.config import TrainConfig
from sightd.model import create_model
from sightd.trainer import evaluate
from sightd.trainer.augment import Augment
from sightd.trainer.data import decode_files, scan_folder
from sightd.trainer.train import Plan, train_epoch

CLASSES = 10


def write_photos(root: Path, count: int, seed: int = 0) -> None:
    """640x480 JPEGs: a smooth random background, a class-coloured textured blob, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    for i in range(count):
        label = i % CLASSES
        low = rng.uniform(40, 220, size=(6, 8, 3)).astype(np.float32)
        image = cv2.resize(low, (640, 480), interpolation=cv2.INTER_CUBIC)
        cx, cy, r = rng.uniform(160, 480), rng.uniform(120, 360), rng.uniform(60, 150)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2)[..., None]
        hue = np.array([(label * 25) % 180, 200, 220], np.uint8).reshape(1, 1, 3)
        color = cv2.cvtColor(hue, cv2.COLOR_HSV2BGR).astype(np.float32)[0, 0]
        texture = 25 * np.sin(xx / rng.uniform(4, 12))[..., None]
        image = np.where(mask, color + texture, image) + rng.normal(0, 6, image.shape)
        image = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0)
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])


class SeedDataset(Dataset):
    """The seed's Dataset: full-size numpy images in memory, transformed per item."""

    def __init__(self, images: list[np.ndarray], labels: list[int]):
        self.images, self.labels = images, labels
        self.transform = transforms.Compose(
            [
                transforms.ToPILImage(),
                transforms.Resize((64, 64)),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def baseline(root: Path, paths: list[str], labels: list[int], cfg: TrainConfig):
    """Decode as the seed did; return (decode seconds, a function that trains one epoch)."""
    start = time.perf_counter()
    images = [cv2.cvtColor(cv2.imread(str(root / p)), cv2.COLOR_BGR2RGB) for p in paths]
    decode = time.perf_counter() - start
    loader = DataLoader(SeedDataset(images, labels), batch_size=cfg.batch_size, shuffle=True)
    model = create_model(cfg.arch, CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    criterion = torch.nn.CrossEntropyLoss()

    def epoch(_: int) -> None:
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()

    return decode, epoch


def sightd(root: Path, paths: list[str], labels: list[int], cfg: TrainConfig):
    """Decode into sightd's cache; return (decode seconds, a function that trains one epoch)."""
    start = time.perf_counter()
    images, kept = decode_files(root, paths, cfg.image_size)
    decode = time.perf_counter() - start
    assert len(kept) == len(paths)
    targets, device = torch.tensor(labels), torch.device("cpu")
    model = create_model(cfg.arch, CLASSES).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    augment = Augment() if cfg.augment is True else None
    plan = Plan(cfg.batch_size, cfg.epochs, 0, augment is not None, cfg.epochs, "benchmark")

    def epoch(number: int) -> None:
        train_epoch(model, optimizer, images, targets, cfg, plan, augment, device, number)

    return decode, epoch


@contextlib.contextmanager
def float32_only(enabled: bool):
    """sightd's loop with bfloat16 autocast off, to show what the cache alone gives."""
    original = evaluate.has_fast_bf16
    if enabled:
        evaluate.has_fast_bf16 = lambda device: False
    try:
        yield
    finally:
        evaluate.has_fast_bf16 = original


def report(name: str, count: int, decode: float, epoch_times: list[float]) -> tuple[float, float]:
    end_to_end = count * len(epoch_times) / (decode + sum(epoch_times))
    steady = count / statistics.median(epoch_times[1:] or epoch_times)
    print(
        f"{name:<32} decode {decode:6.2f} s  epochs {' '.join(f'{t:.2f}' for t in epoch_times)} s"
        f"  end-to-end {end_to_end:7.1f} img/s  steady {steady:7.1f} img/s"
    )
    return end_to_end, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--arch", default="seed")
    parser.add_argument("--augment", action="store_true", help="sightd augments (more work)")
    args = parser.parse_args()
    # else the defaults for a set this size: batch 64, 64 px (640 photos: augmentation off)
    cfg = TrainConfig(arch=args.arch, augment=args.augment)
    torch.manual_seed(0)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        write_photos(root, args.images)
        _, paths, labels = scan_folder(root)
        print(
            f"{len(paths)} JPEG photos 640x480, {CLASSES} classes, arch {cfg.arch}, batch "
            f"{cfg.batch_size}, {args.epochs} epochs, {torch.get_num_threads()} torch threads, "
            f"sightd augmentation {cfg.augment}, "
            f"bfloat16 autocast on this CPU: {evaluate.has_fast_bf16(torch.device('cpu'))}"
        )
        ours = "sightd (augment)" if cfg.augment else "sightd (defaults)"
        names = ["baseline (seed pipeline)", ours, f"{ours[:-1]}, float32)"]
        runs = [baseline(root, paths, labels, cfg), sightd(root, paths, labels, cfg)]
        runs.append(sightd(root, paths, labels, cfg))
        times: list[list[float]] = [[], [], []]
        # Epochs interleave (baseline, sightd, sightd float32, baseline, ...) so that a change in
        # machine load during the run hits all three alike.
        for number in range(1, args.epochs + 1):
            for i, (_, epoch) in enumerate(runs):
                with float32_only(i == 2):
                    tick = time.perf_counter()
                    epoch(number)
                    times[i].append(time.perf_counter() - tick)
    print(f"load average (1 min) at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}")
    figures = [report(n, len(paths), r[0], t) for n, r, t in zip(names, runs, times, strict=True)]
    base = figures[0]
    for name, (end_to_end, steady) in zip(names[1:], figures[1:], strict=True):
        print(
            f"ratio {name} / baseline: end-to-end {end_to_end / base[0]:.2f}x, "
            f"steady state {steady / base[1]:.2f}x"
        )


if __name__ == "__main__":
    main()
