"""Run a model over decoded images; the work behind `sightd eval`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from sightd.checkpoint import ModelInfo
from sightd.classifier import Classifier
from sightd.devices import has_fast_bf16
from sightd.errors import SightdError
from sightd.preprocessing import normalize, normalize_numpy
from sightd.trainer.data import ImageSet, load_files, load_split, scan_folder
from sightd.trainer.metrics import classification_report, expected_calibration_error

EVAL_BATCH = 256  # no gradients are kept, so bigger batches than training fit
ECE_BINS = 15  # the usual choice since Guo et al. 2017, so figures compare with papers'
WORST_MISTAKES = 25  # a 5 x 5 grid: enough to see a pattern, small enough to look at each


def autocast(device: torch.device) -> AbstractContextManager:
    """bfloat16 autocast where the hardware does bfloat16 natively, else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=has_fast_bf16(device))


def to_input(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 NHWC batch -> normalised float NCHW in channels_last (what the conv kernels like)."""
    return normalize(images, mean, std).contiguous(memory_format=torch.channels_last)


@dataclass
class Evaluation:
    """A model's calibrated answers on a set of labelled images."""

    info: ModelInfo
    data: ImageSet
    probabilities: np.ndarray  # N x classes, calibrated with the checkpoint's temperature
    report: dict  # classification_report of the top-class labels

    @cached_property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @cached_property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    @cached_property
    def correct(self) -> np.ndarray:
        return self.predicted == self.data.labels.numpy()

    @property
    def ece(self) -> float:
        return expected_calibration_error(self.confidence, self.correct, ECE_BINS)

    def worst_mistakes(self, limit: int = WORST_MISTAKES) -> list[int]:
        """Indices of misclassified images, the most confidently wrong first (at most limit)."""
        wrong = np.flatnonzero(~self.correct)
        order = np.argsort(-self.confidence[wrong], kind="stable")  # ties keep file order
        return wrong[order][:limit].tolist()


def evaluate_checkpoint(
    model_path: str | Path,
    data_dir: str | Path,
    split: str,
    device: str,
    engine: str = "torch",
    precision: str = "auto",
) -> Evaluation:
    """The model's answers on `split` ("test" or "all") of `data_dir`.

    The model runs exactly as the live worker serves it (sightd.classifier, with its calibration
    temperature, through `engine` at `precision`), so the figures reported are those of what
    labels the frames.
    """
    classifier = Classifier.load(model_path, device, precision, engine)
    info: ModelInfo = classifier.info
    if split == "test":
        paths = _test_paths(Path(model_path).parent / "split.json", Path(data_dir), info)
    else:
        _, paths, _ = scan_folder(data_dir)
    data = load_files(data_dir, paths, info.classes, info.image_size)
    probabilities = np.concatenate(
        [
            classifier.calibrated(normalize_numpy(images.numpy(), info.mean, info.std))
            for images in data.images.split(EVAL_BATCH)
        ]
    )
    report = classification_report(data.labels, probabilities.argmax(axis=1), info.classes)
    return Evaluation(info, data, probabilities, report)


def _test_paths(split_file: Path, data_dir: Path, info: ModelInfo) -> list[str]:
    record = load_split(split_file)
    if record.get("classes") != info.classes:
        raise SightdError(f"{split_file} lists other classes than the model beside it; retrain")
    paths = record["test"]
    missing = [p for p in paths if not (data_dir / p).is_file()]
    if missing:
        raise SightdError(
            f"{len(missing)} of the {len(paths)} test images in {split_file} are not in "
            f"{data_dir} (first: {missing[0]}); give the folder the model was trained on, "
            "or use --split all"
        )
    return paths
