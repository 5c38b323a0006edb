"""The trainer's commands: train, eval, predict, dataset digits.

Module level stays light (click only) so that listing commands never imports torch.
"""

from __future__ import annotations

import json
import sys

import click

from sightd.cli_options import config_option
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
    "--augment",
    type=click.Choice(["auto", "on", "off"]),
    help="Camera-like shifts, zooms, rotations, light, blur, noise, cover; auto = small sets.",
)
@click.option("--flip/--no-flip", default=None, help="Also mirror images (off: no flips).")
@click.option("--min-steps", type=int, help="Optimiser steps at least (0: fixed epochs).")
@click.option("--patience", type=int, help="Stop after N epochs without progress (0: auto).")
@click.option(
    "--init",
    metavar="PATH|torchvision",
    help="Start resnet18/34/50 from ImageNet: a torchvision state dict, or 'torchvision'.",
)
@click.option("--calibrate/--no-calibrate", default=None, help="Fit a temperature on validation.")
@click.option("--seed", type=int, help="Seeds the split, weights and augmentation.")
@click.option(
    "--latest/--no-latest",
    default=True,
    help="Point runs/latest at the new run (--no-latest: leave the served model alone).",
)
@click.option(
    "--progress-file",
    type=click.Path(dir_okay=False),
    help="Also write the plan, each epoch and the result there, as JSON lines.",
)
@click.option(
    "--nproc",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Training processes on this machine (DistributedDataParallel: one GPU each on CUDA, "
    "the cores shared out on a CPU); the batch size stays the global one.",
)
def train(
    data_dir,
    config_path,
    run_dir,
    epochs,
    arch,
    batch_size,
    image_size,
    device,
    augment,
    flip,
    min_steps,
    patience,
    init,
    calibrate,
    seed,
    latest,
    progress_file,
    nproc,
):
    """Train a classifier on DATA_DIR (one folder of images per class).

    Writes model.safetensors, metrics.json, split.json, curves.png and confusion_matrix.png to
    RUN_DIR (default: runs/<timestamp>/, and runs/latest points at it). Flags override the
    config file's train section. Under `torchrun --nproc-per-node N -m sightd train ...` each
    process is one of N ranks, as with --nproc N.
    """
    from sightd.config import load_config, override
    from sightd.trainer.distributed import Job
    from sightd.trainer.distributed import train as train_on

    cfg = override(
        load_config(config_path).train,
        "train",
        epochs=epochs,
        arch=arch,
        batch_size=batch_size,
        image_size=image_size,
        device=device,
        augment={"on": True, "off": False}.get(augment, augment),
        flip=flip,
        min_steps=min_steps,
        patience=patience,
        init=init,
        calibrate=calibrate,
        seed=seed,
    )
    train_on(Job(cfg, data_dir or cfg.data_dir, run_dir, progress_file, latest), nproc)


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
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    help="Confusion matrix PNG (default: eval_confusion_matrix_<split>.png beside MODEL).",
)
@click.option(
    "--misclassified",
    "misclassified_path",
    type=click.Path(dir_okay=False),
    help="Grid of the worst mistakes (default: misclassified_<split>.png beside MODEL).",
)
@device_option
def evaluate(model_path, data_dir, split, plot, misclassified_path, device):
    """Accuracy, per-class table, confusion matrix and calibration of MODEL on DATA_DIR.

    Draws the matrix to --plot and the most confidently wrong images (up to 25) to
    --misclassified; both files are written on every run, named after the split by default.
    """
    from pathlib import Path

    from sightd.trainer.evaluate import ECE_BINS, evaluate_checkpoint
    from sightd.trainer.metrics import format_report
    from sightd.trainer.plots import save_confusion_matrix

    result = evaluate_checkpoint(model_path, data_dir, split, device or "auto")
    info = result.info
    click.echo(f"{info.arch} on {len(result.data.paths)} images ({split} split of {data_dir})")
    click.echo(format_report(result.report))
    click.echo(
        f"\nexpected calibration error {result.ece:.4f} "
        f"({ECE_BINS} bins, temperature {info.temperature:g})"
    )
    beside = Path(model_path).parent
    plot = Path(plot) if plot else beside / f"eval_confusion_matrix_{split}.png"
    save_confusion_matrix(plot, result.report["confusion_matrix"], info.classes, f"{split} split")
    click.echo(f"confusion matrix drawn to {plot}")
    grid = Path(misclassified_path or beside / f"misclassified_{split}.png")
    _report_mistakes(result, grid, model_path, device or "auto")


def _report_mistakes(result, path, model_path, device: str) -> None:
    """List the worst mistakes, most confident first, and draw them (or a note: none) to path,
    each with the Grad-CAM of its predicted class over it where grad-cam is installed."""
    from sightd.explain import gradcam
    from sightd.trainer.plots import save_misclassified

    worst = result.worst_mistakes()
    if not worst:
        save_misclassified(path, [], [])
        click.echo(f"\nno image misclassified ({path} says so)")
        return
    classes, data = result.info.classes, result.data
    click.echo(f"\n{int((~result.correct).sum())} misclassified; the most confident mistakes:")
    titles = []
    for i in worst:
        true, guess = classes[int(data.labels[i])], classes[int(result.predicted[i])]
        confidence = float(result.confidence[i])
        click.echo(f"  {data.paths[i]}\ttrue {true}\tpredicted {guess}\t{confidence:.4f}")
        titles.append(f"true {true}\npredicted {guess} {confidence:.3f}")
    tiles = [data.images[i].numpy() for i in worst]
    drawn = f"without heat maps ({gradcam.INSTALL_HINT})"
    if gradcam.available():
        explainer = gradcam.Explainer(model_path, device)
        tiles = explainer.overlays_rgb(data.images[worst], result.predicted[worst].tolist())
        drawn = "each with the heat map of its predicted class (red: the strongest evidence)"
    save_misclassified(path, tiles, titles)
    click.echo(f"the {len(worst)} drawn to {path}, {drawn}")


@click.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("images", metavar="IMAGE_OR_FOLDER...", nargs=-1, required=True)
@config_option
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    help="Below it the label is unknown (default: the config's model.min_confidence).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with scores.")
@device_option
def predict(model_path, images, config_path, min_confidence, as_json, device):
    """Label images with MODEL: one line each (path, label, confidence).

    A folder stands for every image file under it (hidden ones skipped). Below the minimum
    confidence the label is unknown, as the live worker says, and the top guess follows it.
    A file that is missing or cannot be decoded is reported on stderr; the others are still
    labelled and the exit status is then 1.
    """
    from sightd.classifier import Classifier
    from sightd.config import load_config, override
    from sightd.publishers.events import UNKNOWN, decide_label

    model_cfg = override(load_config(config_path).model, "model", min_confidence=min_confidence)
    classifier = Classifier.load(model_path, device or "auto")
    paths, failed = expand_images(images)
    for start in range(0, len(paths), 64):  # bounded memory for thousands of files
        chunk = paths[start : start + 64]
        frames = [read_or_skip(path, classifier.info.image_size) for path in chunk]
        failed += sum(frame is None for frame in frames)
        readable = [(p, f) for p, f in zip(chunk, frames, strict=True) if f is not None]
        predictions = classifier.predict([frame for _, frame in readable]) if readable else []
        for (path, _), pred in zip(readable, predictions, strict=True):
            label = decide_label(pred.label, pred.confidence, model_cfg.min_confidence)
            if as_json:
                row = {"path": path, "label": label, "confidence": pred.confidence}
                click.echo(json.dumps({**row, "top": pred.label, "scores": pred.scores}))
            else:
                guess = f"\t(top guess: {pred.label})" if label == UNKNOWN else ""
                click.echo(f"{path}\t{label}\t{pred.confidence:.4f}{guess}")
    if failed:
        sys.exit(1)


def expand_images(arguments) -> tuple[list[str], int]:
    """(image paths to label, number of arguments skipped): a folder becomes every visible
    image file under it, in name order; a missing path or an empty folder is reported."""
    from pathlib import Path

    from sightd.images import is_image_file

    paths, skipped = [], 0
    for argument in arguments:
        root = Path(argument)
        if root.is_dir():
            found = [
                str(p)
                for p in sorted(root.rglob("*"))
                if is_image_file(p)
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            ]
            if not found:
                _skip(argument, "no image files in this folder")
                skipped += 1
            paths += found
        elif root.exists():
            paths.append(argument)  # named on purpose: tried whatever its extension
        else:
            _skip(argument, "no such file or folder")
            skipped += 1
    return paths, skipped


def read_or_skip(path: str, size: int = 0):
    """The image as a BGR frame (a JPEG reduced for a model of `size` px; 0: full size), or
    None after saying on stderr why it cannot be."""
    from sightd.images import read_image

    try:
        frame = read_image(path, size)
    except OSError as exc:  # unreadable (permissions), or gone since the folder was listed
        _skip(path, f"cannot be read ({exc.strerror or exc})")
        return None
    if frame is None:
        _skip(path, "cannot be decoded as an image")
    return frame


def _skip(path, reason: str) -> None:
    click.echo(f"skipping {path}: {reason}", err=True)


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
