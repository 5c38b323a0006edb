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

Then several processes: `sightd train --nproc 1` against `--nproc 2` on the CPU, whole commands
on the same photos, taking turns for --rounds rounds (train_images_per_s from metrics.json:
images through the training steps per second of them, and the command's wall time). Where CUDA
is available the same comparisons run on it, with no flag to change: the seed-style loop
against sightd's in one process, then `--device cuda --nproc 1` and `--nproc <GPU count>`, each
against the seed-style loop's training steps.
Usage: python benchmarks/train_throughput.py [--images 640] [--epochs 3] [--arch seed] [--augment]
       [--rounds 2] [--skip-cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from sightd.config import TrainConfig
from sightd.cpu import usable_cpus
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


def baseline(root: Path, paths: list[str], labels: list[int], cfg: TrainConfig, device="cpu"):
    """Decode as the seed did; return (decode seconds, a function that trains one epoch)."""
    start = time.perf_counter()
    images = [cv2.cvtColor(cv2.imread(str(root / p)), cv2.COLOR_BGR2RGB) for p in paths]
    decode = time.perf_counter() - start
    loader = DataLoader(SeedDataset(images, labels), batch_size=cfg.batch_size, shuffle=True)
    model = create_model(cfg.arch, CLASSES).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    criterion = torch.nn.CrossEntropyLoss()

    def epoch(_: int) -> None:
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x.to(device)), y.to(device))
            loss.backward()
            optimizer.step()
        synchronize(device)

    return decode, epoch


def sightd(root: Path, paths: list[str], labels: list[int], cfg: TrainConfig, device="cpu"):
    """Decode into sightd's cache; return (decode seconds, a function that trains one epoch)."""
    start = time.perf_counter()
    images, kept = decode_files(root, paths, cfg.image_size)
    decode = time.perf_counter() - start
    assert len(kept) == len(paths)
    device = torch.device(device)
    images, targets = images.to(device), torch.tensor(labels).to(device)
    model = create_model(cfg.arch, CLASSES).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    augment = Augment() if cfg.augment is True else None
    plan = Plan(cfg.batch_size, cfg.epochs, 0, augment is not None, cfg.epochs, "benchmark")

    def epoch(number: int) -> None:
        train_epoch(model, optimizer, images, targets, cfg, plan, augment, device, number)
        synchronize(device)

    return decode, epoch


def synchronize(device) -> None:
    """An epoch ends when the GPU is done with it, not when its last step is queued."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


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


def in_process(root: Path, paths, labels, cfg: TrainConfig, epochs: int, device: str) -> float:
    """The seed-style loop, sightd's and sightd's in float32, epochs interleaved (a change in
    load hits all three alike); returns the seed-style loop's training-step img/s."""
    ours = "sightd (augment)" if cfg.augment else "sightd (defaults)"
    names = [
        f"baseline (seed pipeline) {device}",
        f"{ours} {device}",
        f"{ours[:-1]}, float32) {device}",
    ]
    runs = [baseline(root, paths, labels, cfg, device), sightd(root, paths, labels, cfg, device)]
    runs.append(sightd(root, paths, labels, cfg, device))
    times: list[list[float]] = [[], [], []]
    for number in range(1, epochs + 1):
        for i, (_, epoch) in enumerate(runs):
            with float32_only(i == 2):
                tick = time.perf_counter()
                epoch(number)
                times[i].append(time.perf_counter() - tick)
    figures = [report(n, len(paths), r[0], t) for n, r, t in zip(names, runs, times, strict=True)]
    base = figures[0]
    for name, (end_to_end, steady) in zip(names[1:], figures[1:], strict=True):
        print(
            f"ratio {name} / baseline: end-to-end {end_to_end / base[0]:.2f}x, "
            f"steady state {steady / base[1]:.2f}x"
        )
    return len(paths) * epochs / sum(times[0])


def train_command(root: Path, out: Path, cfg: TrainConfig, epochs: int, nproc: int, device: str):
    """`sightd train --nproc N` as a user runs it; (its train_images_per_s, wall seconds)."""
    (out.parent / "empty.yaml").write_text("{}\n")
    command = [sys.executable, "-m", "sightd", "train", str(root), "--out", str(out)]
    command += ["-c", str(out.parent / "empty.yaml"), "--no-latest", "--arch", cfg.arch]
    command += ["--epochs", str(epochs), "--min-steps", "0", "--patience", str(epochs)]
    command += ["--augment", "on" if cfg.augment else "off", "--device", device]
    command += ["--nproc", str(nproc)]
    tick = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - tick
    return json.loads((out / "metrics.json").read_text())["train_images_per_s"], wall


def processes(root: Path, cfg, epochs: int, rounds: int, device: str, counts: list[int]):
    """`--nproc` counts taking turns for `rounds`; medians; returns {nproc: img/s}."""
    figures: dict[int, list[tuple[float, float]]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for n in counts:
                load = os.getloadavg()[0]
                rate, wall = train_command(
                    root, Path(tmp) / f"{device}-{n}-{r}", cfg, epochs, n, device
                )
                figures[n].append((rate, wall))
                print(
                    f"round {r + 1}: sightd train --device {device} --nproc {n}: train "
                    f"{rate:7.1f} img/s, wall {wall:6.1f} s (load average {load:.1f} at start)"
                )
    medians = {n: statistics.median(rate for rate, _ in runs) for n, runs in figures.items()}
    walls = {n: statistics.median(wall for _, wall in runs) for n, runs in figures.items()}
    for n in counts:
        print(
            f"median --nproc {n} on {device}: train {medians[n]:7.1f} img/s "
            f"({medians[n] / medians[counts[0]]:.2f}x --nproc {counts[0]}), wall {walls[n]:.1f} s"
        )
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--arch", default="seed")
    parser.add_argument("--augment", action="store_true", help="sightd augments (more work)")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each --nproc count")
    parser.add_argument("--skip-cpu", action="store_true", help="only the CUDA figures")
    args = parser.parse_args()
    # else the defaults for a set this size: batch 64, 64 px (640 photos: augmentation off)
    cfg = TrainConfig(arch=args.arch, augment=args.augment)
    torch.manual_seed(0)
    load = os.getloadavg()
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        write_photos(root, args.images)
        _, paths, labels = scan_folder(root)
        print(
            f"{len(paths)} JPEG photos 640x480, {CLASSES} classes, arch {cfg.arch}, batch "
            f"{cfg.batch_size}, {args.epochs} epochs, {torch.get_num_threads()} torch threads, "
            f"{len(usable_cpus())} usable cores, sightd augmentation {cfg.augment}, "
            f"bfloat16 autocast on this CPU: {evaluate.has_fast_bf16(torch.device('cpu'))}, "
            f"GPUs: {torch.cuda.device_count() if cuda else 0}"
        )
        if not args.skip_cpu:
            in_process(root, paths, labels, cfg, args.epochs, "cpu")
            processes(root, cfg, args.epochs, args.rounds, "cpu", [1, 2])
        if cuda:
            print(f"CUDA: {torch.cuda.get_device_name(0)}")
            seed_style = in_process(root, paths, labels, cfg, args.epochs, "cuda")
            torch.cuda.empty_cache()  # the GPU memory of those runs, for the commands' ranks
            gpus = torch.cuda.device_count()
            rates = processes(root, cfg, args.epochs, args.rounds, "cuda", sorted({1, gpus}))
            for n, rate in rates.items():
                print(
                    f"ratio sightd train --device cuda --nproc {n} / seed-style loop on one "
                    f"GPU (training steps): {rate / seed_style:.2f}x"
                )
        else:
            print("CUDA: not available here; the CUDA figures need a machine with a GPU")
    print(f"load average (1 min) at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
