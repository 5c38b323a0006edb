"""curves.png and confusion_matrix.png, drawn off-screen and written atomically."""

from __future__ import annotations

from pathlib import Path

# A bare Figure (no pyplot) renders PNG with matplotlib's Agg backend: no display needed, no
# global backend switched for anyone else in the process, no window ever pops up.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sightd.atomic import atomic_open


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


def _save(fig: Figure, path: Path) -> None:
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
