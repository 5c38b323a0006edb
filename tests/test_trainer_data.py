"""Dataset folders as users really have them: messy files, odd formats, too little data."""

import logging

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sightd.cli import main
from sightd.errors import SightdError
from sightd.trainer.data import load_folder, split_indices


def _png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _solid(bgr, size=(12, 16)) -> np.ndarray:
    return np.full((*size, 3), bgr, np.uint8)


@pytest.fixture
def messy(tmp_path):
    """Two classes among the clutter a real folder collects."""
    root = tmp_path / "data"
    _png(root / "apple" / "plain.png", _solid((10, 20, 30)))
    _png(root / "apple" / "SHOUT.JPG", _solid((10, 20, 30)))
    _png(root / "apple" / "photo.jpeg", _solid((10, 20, 30)))
    _png(root / "apple" / "gray.png", np.full((12, 16), 100, np.uint8))
    _png(root / "apple" / "rgba.png", np.dstack([_solid((10, 20, 30)), np.full((12, 16), 128)]))
    _png(root / "apple" / "deep.png", np.full((12, 16, 3), 40000, np.uint16))
    _png(root / "apple" / ".hidden.png", _solid((0, 0, 0)))
    (root / "apple" / "notes.txt").write_text("not an image")
    (root / "apple" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    for i in range(4):
        _png(root / "banana" / f"{i}.bmp", _solid((0, 200, 250)))
    (root / "banana" / "Thumbs.db").write_bytes(b"\0" * 64)
    _png(root / ".cache" / "x.png", _solid((1, 2, 3)))  # hidden folder: not a class
    (root / "labels.csv").write_text("file,label\n")  # loose file at the top: ignored
    return root


def test_a_messy_folder_loads_every_usable_image_and_names_the_broken_one(messy, caplog):
    with caplog.at_level(logging.WARNING):
        data = load_folder(messy, size=8)

    assert data.classes == ["apple", "banana"]
    assert sorted(data.paths) == sorted(
        [f"apple/{n}" for n in ["plain.png", "SHOUT.JPG", "photo.jpeg", "gray.png"]]
        + ["apple/rgba.png", "apple/deep.png"]
        + [f"banana/{i}.bmp" for i in range(4)]
    )
    assert data.images.shape == (10, 8, 8, 3) and str(data.images.dtype) == "torch.uint8"
    assert data.labels.tolist() == [0 if p.startswith("apple") else 1 for p in data.paths]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "broken.png" in warnings[0]


def test_grayscale_rgba_and_16_bit_images_arrive_as_8_bit_rgb(messy):
    data = load_folder(messy, size=8)
    pixel = {path: data.images[i, 4, 4].tolist() for i, path in enumerate(data.paths)}
    assert pixel["apple/plain.png"] == [30, 20, 10]  # BGR on disk, RGB in memory
    assert pixel["apple/gray.png"] == [100, 100, 100]
    assert pixel["apple/rgba.png"] == [30, 20, 10]
    assert pixel["apple/deep.png"] == [40000 >> 8] * 3


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("empty class folder", "has no image files"),
        ("only broken images", "has no image that can be decoded"),
        ("too few images", "too few images to train on"),
        ("no class folders", "has no class folders"),
        ("one class", "has one class folder"),
        ("missing folder", "does not exist"),
    ],
)
def test_unusable_datasets_stop_training_with_one_line_naming_the_problem(
    problem, expected, messy, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # nothing may be written in the repository
    root = messy
    if problem == "empty class folder":
        (root / "cherry").mkdir()
    elif problem == "only broken images":
        (root / "cherry").mkdir()
        (root / "cherry" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    elif problem == "too few images":
        root = tmp_path / "tiny"
        for name in ("a", "b"):
            for i in range(2):
                _png(root / name / f"{i}.png", _solid((i, 0, 0)))
    elif problem == "one class":
        root = tmp_path / "single"
        for i in range(5):
            _png(root / "only" / f"{i}.png", _solid((i, 0, 0)))
    elif problem == "no class folders":
        root = tmp_path / "flat"
        _png(root / "loose.png", _solid((0, 0, 0)))
    else:
        root = tmp_path / "nowhere"

    result = CliRunner().invoke(main, ["train", str(root), "--epochs", "1"])

    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_the_split_is_stratified_seeded_and_disjoint():
    import torch

    classes = [str(i) for i in range(10)]
    labels = torch.arange(10).repeat_interleave(20)  # 20 images per class

    split = split_indices(labels, classes, [0.7, 0.15, 0.15], seed=0)

    assert [len(split[n]) for n in ("train", "val", "test")] == [140, 30, 30]
    for name, per_class in (("train", 14), ("val", 3), ("test", 3)):
        assert np.bincount(labels[split[name]].numpy()).tolist() == [per_class] * 10
    every = np.concatenate([split["train"], split["val"], split["test"]])
    assert sorted(every.tolist()) == list(range(200))
    again = split_indices(labels, classes, [0.7, 0.15, 0.15], seed=0)
    other = split_indices(labels, classes, [0.7, 0.15, 0.15], seed=1)
    assert np.array_equal(again["test"], split["test"])
    assert not np.array_equal(other["test"], split["test"])


def test_a_class_too_small_to_split_is_named():
    import torch

    with pytest.raises(SightdError, match="class 'rare' has 2"):
        split_indices(torch.tensor([0] * 30 + [1] * 2), ["common", "rare"], [0.7, 0.15, 0.15], 0)


@pytest.mark.parametrize("count", [3, 4])
def test_three_or_four_images_a_class_are_refused_with_how_many_to_add(count):
    import torch

    labels = torch.tensor([0] * count + [1] * count)
    with pytest.raises(SightdError, match=f"at least 5 .*add {5 - count} or more to a"):
        split_indices(labels, ["a", "b"], [0.7, 0.15, 0.15], 0)


def test_five_images_a_class_put_one_of_each_class_in_every_part():
    import torch

    labels = torch.arange(10).repeat_interleave(5)  # ten classes of five: the smallest allowed
    for seed in range(5):
        split = split_indices(labels, [str(i) for i in range(10)], [0.7, 0.15, 0.15], seed)
        for name in ("train", "val", "test"):
            assert set(labels[split[name]].tolist()) == set(range(10)), (seed, name)


def test_augmentation_varies_images_but_never_mirrors_them():
    import torch

    from sightd.trainer.augment import Augment

    # given 32 copies of an image that is bright on its left half only
    image = torch.zeros(32, 64, 64, 3, dtype=torch.uint8)
    image[:, :, :32] = 200
    torch.manual_seed(0)

    out = Augment()(image)

    assert out.shape == image.shape and out.dtype == torch.uint8
    assert len({bytes(x.numpy()) for x in out}) > 1  # not one transform for the whole batch
    left, right = (
        out[:, 8:56, 4:24].float().mean((1, 2, 3)),
        out[:, 8:56, 40:60].float().mean((1, 2, 3)),
    )
    assert (left > right + 50).all()  # every image still bright on the left


def test_flip_when_asked_mirrors_about_half_of_the_images():
    import torch

    from sightd.trainer.augment import Augment

    image = torch.zeros(64, 64, 64, 3, dtype=torch.uint8)
    image[:, :, :32] = 200
    torch.manual_seed(0)

    out = Augment(flip=True)(image)

    left = out[:, 8:56, 4:24].float().mean((1, 2, 3))
    right = out[:, 8:56, 40:60].float().mean((1, 2, 3))
    mirrored = int((right > left + 50).sum())
    assert 16 <= mirrored <= 48
