"""The trainer's and eval's figures (curves, confusion matrix, misclassified images, reliability),
drawn off-screen and written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# A bare Figure (no pyplot) renders PNG with matplotlib's Agg backend: no display needed, no
# global backend switched for anyone else in the process, no window ever pops up.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sightd.atomic import atomic_open
from sightd.trainer.metrics import expected_calibration_error, reliability_bins


def save_curves(path: Path, history: list[dict]) -> None:
    """Training loss and validation accuracy per epoch, side by side."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [row["train_loss"] for row in history], marker="o")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.plot(epochs, [row["val_accuracy"] for row in history], marker="o", color="tab:green")
    acc_ax.set(title="validation accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.01))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, path)


def save_confusion_matrix(path: Path, matrix: list[list[int]], classes: list[str], title: str):
    """Counts per (true, predicted) pair; the diagonal is what was right."""
    size = min(16, 2.5 + 0.5 * len(classes))
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45 if len(classes) > 10 else 0, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set(title=title, xlabel="predicted class", ylabel="true class")
    if len(classes) <= 30:  # numbers in cells stop being readable beyond that
        high = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                color = "white" if value > high / 2 else "black"
                ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=8)
    _save(fig, path)


MISCLASSIFIED_COLUMNS = 5  # 25 images, the default worst-first count, make a 5 x 5 grid
CELL_INCHES = (1.6, 1.9)  # one image and a two-line title; at 100 dpi, 160 x 190 px a cell


def save_misclassified(path: Path, images_rgb_uint8: Sequence[np.ndarray], titles: Sequence[str]):
    """A grid of small RGB uint8 images, each under its title; with none, a note saying so.

    The figure is CELL_INCHES per cell, so the file's size tells the grid's shape."""
    count = len(images_rgb_uint8)
    columns = min(MISCLASSIFIED_COLUMNS, count) or 1
    rows = -(-count // columns) or 1
    fig = Figure(figsize=(columns * CELL_INCHES[0], rows * CELL_INCHES[1]), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, image, title in zip(axes, images_rgb_uint8, titles, strict=False):
        ax.imshow(image, interpolation="nearest")  # small images: show pixels, not a blur
        ax.set_title(title, fontsize=8)
    if not count:
        axes[0].text(0.5, 0.5, "no image\nmisclassified", ha="center", va="center")
    _save(fig, path)


def save_reliability(
    path: Path,
    before: tuple[np.ndarray, np.ndarray],
    after: tuple[np.ndarray, np.ndarray] | None,
    bins: int = 15,
) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal of perfect
    calibration, before and after calibration, each (confidences, correct), ECE in the legend."""
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, pair, color in [("before", before, "tab:orange"), ("after", after, "tab:blue")]:
        if pair is None:
            continue
        confidences, correct = pair
        mean_confidence, accuracy, count = reliability_bins(confidences, correct, bins)
        filled = count > 0
        ece = expected_calibration_error(confidences, correct, bins)
        ax.plot(
            mean_confidence[filled],
            accuracy[filled],
            marker="o",
            color=color,
            label=f"{name} calibration (ECE {ece:.4f})",
        )
    ax.set(
        title=f"reliability ({bins} confidence bins)",
        xlabel="confidence (top-class probability)",
        ylabel="accuracy",
        xlim=(0, 1.01),
        ylim=(0, 1.01),
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    _save(fig, path)


def _save(fig: Figure, path: Path) -> None:
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
