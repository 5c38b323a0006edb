"""Accuracy, a per-class table and the confusion matrix (scikit-learn), as data and as text."""

from __future__ import annotations

import numpy as np


def classification_report(y_true, y_pred, classes: list[str]) -> dict:
    """{"accuracy", "per_class": {name: precision, recall, accuracy, images}, "confusion_matrix"}.

    A class's accuracy is the share of its images labelled correctly (numerically its recall);
    the confusion matrix has one row per true class and one column per predicted class.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(classes)))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, _, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "accuracy": float(matrix[i, i] / support[i]) if support[i] else 0.0,
            "images": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    total = int(matrix.sum())
    accuracy = float(np.trace(matrix) / total) if total else 0.0
    return {"accuracy": accuracy, "per_class": per_class, "confusion_matrix": matrix.tolist()}


def format_report(report: dict) -> str:
    """The report as a table and a matrix a person can read in a terminal."""
    names = list(report["per_class"])
    width = max(8, *(len(n) for n in names))
    lines = [f"accuracy {report['accuracy']:.4f}", ""]
    lines.append(f"{'class':<{width}}  precision  recall  accuracy  images")
    for name, row in report["per_class"].items():
        lines.append(
            f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  "
            f"{row['accuracy']:8.4f}  {row['images']:6d}"
        )
    matrix = report["confusion_matrix"]
    cell = max(5, *(len(n) for n in names), *(len(str(v)) for r in matrix for v in r))
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    lines.append(" " * width + "  " + " ".join(f"{n:>{cell}}" for n in names))
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)
