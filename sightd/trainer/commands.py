"""The trainer's commands: train, eval, predict, dataset digits.

Module level stays light (click only) so that listing commands never imports torch.
"""

from __future__ import annotations

import json
import sys

import click

from sightd.cli import config_option
from sightd.devices import DEVICE_CHOICES

device_option = click.option(
    "--device",
    type=click.Choice(DEVICE_CHOICES),
    default=None,
    help="auto = cuda, else mps, else cpu.",
)


@click.command()
@click.argument("data_dir", required=False, type=click.Path(file_okay=False))
@config_option
@click.option(
    "--out",
    "run_dir",
    type=click.Path(file_okay=False),
    help="Run folder (default: a new runs/<timestamp>/, also linked as runs/latest).",
)
@click.option("--epochs", type=int, help="Passes over the training split.")
@click.option("--arch", help="seed, resnet18, resnet34 or resnet50.")
@click.option("--batch-size", type=int, help="Images per optimiser step.")
@click.option("--image-size", type=int, help="Square network input, pixels.")
@device_option
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Random shifts, zooms, rotations, jitter; no flips.",
)
@click.option("--seed", type=int, help="Seeds the split, weights and augmentation.")
def train(
    data_dir, config_path, run_dir, epochs, arch, batch_size, image_size, device, augment, seed
):
    """Train a classifier on DATA_DIR (one folder of images per class).

    Writes model.safetensors, metrics.json, split.json, curves.png and confusion_matrix.png to
    RUN_DIR (default: runs/<timestamp>/, and runs/latest points at it). Flags override the
    config file's train section.
    """
    from sightd.config import load_config, override
    from sightd.trainer.train import run_training

    cfg = override(
        load_config(config_path).train,
        "train",
        epochs=epochs,
        arch=arch,
        batch_size=batch_size,
        image_size=image_size,
        device=device,
        augment=augment,
        seed=seed,
    )
    run_training(cfg, data_dir or cfg.data_dir, run_dir)


@click.command("eval")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option(
    "--split",
    type=click.Choice(["test", "all"]),
    default="test",
    show_default=True,
    help="test: the images split.json (beside MODEL) held out in training; all: every image.",
)
@click.option("--plot", type=click.Path(dir_okay=False), help="Confusion matrix PNG to write.")
@device_option
def evaluate(model_path, data_dir, split, plot, device):
    """Accuracy, per-class table and confusion matrix of MODEL on DATA_DIR.

    The matrix is also drawn to --plot (default: eval_confusion_matrix.png beside MODEL).
    """
    from pathlib import Path

    from sightd.trainer.evaluate import evaluate_checkpoint
    from sightd.trainer.metrics import format_report
    from sightd.trainer.plots import save_confusion_matrix

    report, info, count = evaluate_checkpoint(model_path, data_dir, split, device or "auto")
    click.echo(f"{info.arch} on {count} images ({split} split of {data_dir})")
    click.echo(format_report(report))
    plot = Path(plot) if plot else Path(model_path).parent / "eval_confusion_matrix.png"
    save_confusion_matrix(plot, report["confusion_matrix"], info.classes, f"{split} split")
    click.echo(f"confusion matrix drawn to {plot}")


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with scores.")
@device_option
def predict(model_path, images, as_json, device):
    """Label IMAGE files with MODEL: one line each (path, label, confidence).

    An image that cannot be decoded is reported on stderr; the exit status is then 1.
    """
    from sightd.classifier import Classifier
    from sightd.images import read_image

    classifier = Classifier.load(model_path, device or "auto")
    failed = 0
    for start in range(0, len(images), 64):  # bounded memory for thousands of files
        chunk = images[start : start + 64]
        frames = [read_image(path, classifier.info.image_size) for path in chunk]
        for path, frame in zip(chunk, frames, strict=True):
            if frame is None:
                click.echo(f"warning: skipping {path}: cannot be decoded as an image", err=True)
                failed += 1
        readable = [
            (path, frame) for path, frame in zip(chunk, frames, strict=True) if frame is not None
        ]
        predictions = classifier.predict([frame for _, frame in readable]) if readable else []
        for (path, _), pred in zip(readable, predictions, strict=True):
            if as_json:
                row = {"path": path, "label": pred.label, "confidence": pred.confidence}
                click.echo(json.dumps({**row, "scores": pred.scores}))
            else:
                click.echo(f"{path}\t{pred.label}\t{pred.confidence:.4f}")
    if failed:
        sys.exit(1)


@click.group()
def dataset():
    """Write a built-in dataset as folders of images, one per class."""


@dataset.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
def digits(out_dir):
    """scikit-learn's 1797 handwritten digits as OUT_DIR/<0..9>/*.png (64x64 RGB)."""
    from sightd.trainer.digits import write_digits_dataset

    write_digits_dataset(out_dir)
    click.echo(f"wrote 1797 images of 10 classes (0-9) to {out_dir}")
