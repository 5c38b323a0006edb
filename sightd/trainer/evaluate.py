"""Run a model over decoded images; the work behind `sightd eval`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from sightd.checkpoint import ModelInfo
from sightd.classifier import Classifier
from sightd.devices import has_fast_bf16
from sightd.errors import SightdError
from sightd.preprocessing import normalize
from sightd.trainer.data import ImageSet, load_files, load_split, scan_folder
from sightd.trainer.metrics import classification_report

EVAL_BATCH = 256  # no gradients are kept, so bigger batches than training fit


def autocast(device: torch.device) -> AbstractContextManager:
    """bfloat16 autocast where the hardware does bfloat16 natively, else a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=has_fast_bf16(device))


def to_input(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 NHWC batch -> normalised float NCHW in channels_last (what the conv kernels like)."""
    return normalize(images, mean, std).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict_labels(model, data: ImageSet, mean, std, device: torch.device) -> torch.Tensor:
    """The class index the model gives each image (on the CPU)."""
    model.eval()
    out = []
    for images in data.images.split(EVAL_BATCH):
        with autocast(device):
            logits = model(to_input(images.to(device), mean, std))
        out.append(logits.argmax(dim=1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def evaluate_checkpoint(model_path: str | Path, data_dir: str | Path, split: str, device: str):
    """(report, info, number of images) for `split` ("test" or "all") of `data_dir`.

    The model runs exactly as the live worker serves it (sightd.classifier), so the accuracy
    reported is the accuracy of what labels the frames.
    """
    classifier = Classifier.load(model_path, device)
    info: ModelInfo = classifier.info
    if split == "test":
        paths = _test_paths(Path(model_path).parent / "split.json", Path(data_dir), info)
    else:
        _, paths, _ = scan_folder(data_dir)
    data = load_files(data_dir, paths, info.classes, info.image_size)
    predicted = torch.cat(
        [
            classifier.forward(normalize(images, info.mean, info.std)).argmax(dim=1).cpu()
            for images in data.images.split(EVAL_BATCH)
        ]
    )
    return classification_report(data.labels, predicted, info.classes), info, len(data.paths)


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
