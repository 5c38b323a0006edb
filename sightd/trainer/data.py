"""A folder-per-class dataset, decoded and resized once into a uint8 tensor, and its split.

Every file is read once, in parallel threads (cv2 releases the GIL), and kept as a small
uint8 image: the training loop never touches a file again. The seeded, stratified split is
saved as split.json beside the weights so that `sightd eval --split test` is honest.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sightd.atomic import atomic_write_text
from sightd.errors import SightdError
from sightd.images import is_image_file, read_image
from sightd.preprocessing import resize_rgb

log = logging.getLogger(__name__)
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class ImageSet:
    """Decoded images: `images[i]` (RGB uint8 HxWx3) is file `paths[i]` of class `labels[i]`."""

    root: Path
    classes: list[str]
    paths: list[str]  # relative to root, "class/file.png"
    labels: torch.Tensor  # int64, N
    images: torch.Tensor  # uint8, N x size x size x 3 (RGB)

    def subset(self, indices: np.ndarray) -> ImageSet:
        index = torch.as_tensor(indices, dtype=torch.long)
        paths = [self.paths[i] for i in indices]
        return ImageSet(self.root, self.classes, paths, self.labels[index], self.images[index])


def scan_folder(root: str | Path) -> tuple[list[str], list[str], list[int]]:
    """Class names (sorted visible sub-folders) and every image file's relative path and label."""
    root = Path(root)
    if not root.is_dir():
        raise SightdError(f"dataset folder {root} does not exist; it needs one folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise SightdError(
            f"dataset folder {root} has no class folders; put each class's images "
            "in its own sub-folder"
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            p for p in (root / name).rglob("*") if is_image_file(p) and not _hidden(p, root)
        )
        if not files:
            raise SightdError(
                f"class folder {root / name} has no image files (png, jpg, bmp, webp)"
            )
        paths += [p.relative_to(root).as_posix() for p in files]
        labels += [label] * len(files)
    return classes, paths, labels


def load_folder(root: str | Path, size: int) -> ImageSet:
    """Scan and decode a whole dataset; unreadable files are skipped with a warning."""
    classes, paths, labels = scan_folder(root)
    if len(classes) < 2:
        raise SightdError(
            f"dataset folder {root} has one class folder; a classifier needs two "
            "or more, one sub-folder of images per class"
        )
    images, kept = decode_files(Path(root), paths, size)
    labels_kept = torch.tensor([labels[i] for i in kept], dtype=torch.long)
    counts = torch.bincount(labels_kept, minlength=len(classes))
    for name, count in zip(classes, counts.tolist(), strict=True):
        if count == 0:
            raise SightdError(f"class folder {Path(root) / name} has no image that can be decoded")
    return ImageSet(Path(root), classes, [paths[i] for i in kept], labels_kept, images)


def load_files(root: str | Path, paths: list[str], classes: list[str], size: int) -> ImageSet:
    """Decode the named files (class = first folder of the path) for a model with `classes`."""
    root = Path(root)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({p.split("/")[0] for p in paths} - set(index))
    if unknown:
        raise SightdError(
            f"dataset {root} has class folders the model does not know: {', '.join(unknown)} "
            f"(model classes: {', '.join(classes)})"
        )
    images, kept = decode_files(root, paths, size)
    if not kept:
        raise SightdError(f"none of the {len(paths)} images could be read from {root}")
    labels = torch.tensor([index[paths[i].split("/")[0]] for i in kept], dtype=torch.long)
    return ImageSet(root, list(classes), [paths[i] for i in kept], labels, images)


def decode_files(root: Path, paths: list[str], size: int) -> tuple[torch.Tensor, list[int]]:
    """Read and resize each file once -> (uint8 N x size x size x 3 RGB, indices that worked)."""

    def load(path: str) -> np.ndarray | None:
        try:
            frame = read_image(root / path, size)  # a JPEG decodes reduced, near size
        except OSError:  # vanished or unreadable since the scan
            return None
        return None if frame is None else resize_rgb(frame, size)

    images = np.empty((len(paths), size, size, 3), np.uint8)
    kept = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(load, paths)
        for i, image in enumerate(
            tqdm(results, total=len(paths), desc="loading", leave=False, disable=bar_off())
        ):
            if image is None:
                log.warning(
                    "skipping %s: it cannot be read or decoded as an image", root / paths[i]
                )
                continue
            images[len(kept)] = image
            kept.append(i)
    return torch.from_numpy(images[: len(kept)]), kept


MIN_IMAGES_PER_CLASS = 5  # one to validate, one to test, and at least three to learn from


def split_indices(
    labels: torch.Tensor, classes: list[str], fractions: list[float], seed: int
) -> dict[str, np.ndarray]:
    """Seeded train/val/test indices, each sorted, split class by class.

    Each class is shuffled and cut on its own, with at least one image in validation and one
    in test, so every part holds every class (scikit-learn's stratified split can leave a small
    class out of one part, and then validation and test say nothing about it).
    """
    y = labels.numpy()
    counts = np.bincount(y, minlength=len(classes))
    short = [(classes[i], int(c)) for i, c in enumerate(counts) if c < MIN_IMAGES_PER_CLASS]
    if short:
        name, count = min(short, key=lambda item: item[1])
        others = f" (and to {len(short) - 1} other classes)" if len(short) > 1 else ""
        raise SightdError(
            f"too few images to train on: class {name!r} has {count}; each class needs at least "
            f"{MIN_IMAGES_PER_CLASS} (three to learn from, one to validate, one to test): add "
            f"{MIN_IMAGES_PER_CLASS - count} or more to {name}{others}; a few dozen a class "
            "train well"
        )
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    for label in range(len(classes)):
        members = rng.permutation(np.flatnonzero(y == label))
        n_val = max(1, round(len(members) * fractions[1]))
        n_test = max(1, round(len(members) * fractions[2]))
        parts["val"] += members[:n_val].tolist()
        parts["test"] += members[n_val : n_val + n_test].tolist()
        parts["train"] += members[n_val + n_test :].tolist()
    return {name: np.sort(np.array(parts[name], dtype=np.int64)) for name in SPLIT_NAMES}


def save_split(path: Path, data: ImageSet, split: dict[str, np.ndarray], seed: int) -> None:
    record = {"classes": data.classes, "seed": seed}
    record.update({name: [data.paths[i] for i in split[name]] for name in SPLIT_NAMES})
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def load_split(path: Path) -> dict:
    """split.json as written by save_split; a missing or damaged file is a one-line error."""
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SightdError(
            f"{path} does not exist: without the training split the test images are unknown; "
            "use --split all, or a model trained by `sightd train`"
        ) from None
    except (OSError, ValueError) as exc:
        raise SightdError(f"{path} cannot be read as a split file: {exc}") from None
    if not isinstance(record, dict) or not all(
        isinstance(record.get(n), list) for n in SPLIT_NAMES
    ):
        raise SightdError(f"{path} is not a sightd split file (expected train/val/test lists)")
    return record


def bar_off() -> bool | None:
    """A progress bar on a terminal, from one training process alone (rank 0 of a group)."""
    from sightd.trainer.distributed import is_main

    return None if is_main() else True


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
