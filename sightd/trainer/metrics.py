"""Accuracy, a per-class table, the confusion matrix and calibration error, as data and text."""

from __future__ import annotations

import numpy as np


def classification_report(y_true, y_pred, classes: list[str]) -> dict:
    """{"accuracy", "per_class": {name: precision, recall, f1, accuracy, images},
    "confusion_matrix"}.

    A class's accuracy is one-vs-rest: the share of all images whose "is it this class?" answer
    is right, (TP + TN) / N, so it also counts the other classes' images kept out of it. The
    confusion matrix has one row per true class and one column per predicted class.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(classes)))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    total = int(matrix.sum())
    # TN + TP = N - FP - FN: everything outside class i's row and column, plus its diagonal
    wrong = matrix.sum(axis=0) + matrix.sum(axis=1) - 2 * np.diag(matrix)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "accuracy": float((total - wrong[i]) / total) if total else 0.0,
            "images": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    accuracy = float(np.trace(matrix) / total) if total else 0.0
    return {"accuracy": accuracy, "per_class": per_class, "confusion_matrix": matrix.tolist()}


def reliability_bins(confidences: np.ndarray, correct: np.ndarray, bins: int = 15):
    """Per equal-width confidence bin ((0, 1/bins], ..., ((bins-1)/bins, 1]): (mean confidence,
    accuracy, count) as three arrays; an empty bin has count 0 and NaN means."""
    confidences = np.asarray(confidences, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    # side="left" puts a confidence equal to an edge in the bin below it; 0 goes to the first
    index = np.searchsorted(edges[1:-1], confidences, side="left")
    count = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidences, minlength=bins) / count
        accuracy = np.bincount(index, correct, minlength=bins) / count
    return mean_confidence, accuracy, count.astype(np.int64)


def expected_calibration_error(
    confidences: np.ndarray, correct: np.ndarray, bins: int = 15
) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - mean confidence|, each weighted
    by the share of images in the bin (Guo et al. 2017, "On Calibration of Modern Neural
    Networks"). `confidences` are the top-class probabilities, `correct` whether the top class
    was right; 0.0 for no images."""
    mean_confidence, accuracy, count = reliability_bins(confidences, correct, bins)
    total = count.sum()
    if not total:
        return 0.0
    filled = count > 0
    gaps = np.abs(accuracy[filled] - mean_confidence[filled])
    return float((gaps * count[filled]).sum() / total)


def format_report(report: dict) -> str:
    """The report as a table and a matrix a person can read in a terminal."""
    names = list(report["per_class"])
    width = max(8, *(len(n) for n in names))
    lines = [f"accuracy {report['accuracy']:.4f}", ""]
    lines.append(f"{'class':<{width}}  precision  recall      f1  accuracy  images")
    for name, row in report["per_class"].items():
        lines.append(
            f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
            f"{row['f1']:6.4f}  {row['accuracy']:8.4f}  {row['images']:6d}"
        )
    lines.append("(accuracy per class is one-vs-rest: (TP + TN) / all images)")
    matrix = report["confusion_matrix"]
    cell = max(5, *(len(n) for n in names), *(len(str(v)) for r in matrix for v in r))
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    lines.append(" " * width + "  " + " ".join(f"{n:>{cell}}" for n in names))
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)
