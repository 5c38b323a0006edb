"""The small-data path: a few dozen camera-like pictures a class train to a model that works,
with confidences that are calibrated probabilities, and an optional ImageNet start."""

import json

import cv2
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from sightd.checkpoint import load_checkpoint
from sightd.classifier import Classifier
from sightd.cli import main
from sightd.errors import SightdError
from sightd.model import create_model
from sightd.trainer.calibration import fit_temperature

SHAPES = ("circle", "cross", "square")


def shape_picture(shape: str, rng: np.random.Generator, size=(60, 80)) -> np.ndarray:
    """A shape of random size, place and colours on a noisy background of random brightness."""
    height, width = size
    background = rng.integers(20, 160)
    picture = rng.normal(background, 12, (height, width, 3)).clip(0, 255).astype(np.uint8)
    colour = tuple(int(c) for c in rng.integers(170, 256, 3))
    radius = int(rng.integers(9, 15))
    cx = int(rng.integers(radius + 20, width - radius - 20))  # inside the centre square
    cy = int(rng.integers(radius + 2, height - radius - 2))
    if shape == "circle":
        cv2.circle(picture, (cx, cy), radius, colour, -1)
    elif shape == "square":
        cv2.rectangle(picture, (cx - radius, cy - radius), (cx + radius, cy + radius), colour, -1)
    else:
        thick = max(2, radius // 3)
        cv2.line(picture, (cx - radius, cy - radius), (cx + radius, cy + radius), colour, thick)
        cv2.line(picture, (cx - radius, cy + radius), (cx + radius, cy - radius), colour, thick)
    return picture


def write_shapes(root, per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        (root / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / shape / f"{i:03d}.png"), shape_picture(shape, rng))
    return root


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """20 pictures a class, trained with the defaults but for the image size (32 px, quick)."""
    tmp = tmp_path_factory.mktemp("small")
    data = write_shapes(tmp / "data", per_class=20, seed=0)
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({"train": {"out_dir": str(tmp / "runs")}}))
    result = CliRunner().invoke(main, ["train", str(data), "-c", str(config), "--image-size", "32"])
    assert result.exit_code == 0, result.output
    return tmp, data, tmp / "runs" / "latest", result.output


def test_the_first_line_says_what_the_trainer_chose_for_a_small_set(small_run):
    _, _, _, output = small_run
    first = output.splitlines()[0]
    assert "60 images, 3 classes" in first
    assert "augmentation on (auto" in first  # a small set gets camera-like augmentation
    assert "batch 16 x" in first  # a smaller batch and enough steps, not 15 epochs of one step


def test_a_tiny_set_trains_to_a_model_that_beats_chance_clearly(small_run, tmp_path):
    # given 60 pictures it never saw
    _, _, latest, _ = small_run
    unseen = write_shapes(tmp_path / "unseen", per_class=20, seed=99)
    classifier = Classifier.load(latest / "model.safetensors", "cpu", "float32")

    right = 0
    for shape in SHAPES:
        frames = [cv2.imread(str(p)) for p in sorted((unseen / shape).iterdir())]
        right += sum(p.label == shape for p in classifier.predict(frames))

    assert right / 60 >= 0.75  # chance is 0.33


def test_calibration_is_fitted_stored_and_applied_by_the_classifier(small_run):
    _, data, latest, _ = small_run
    metrics = json.loads((latest / "metrics.json").read_text())
    info = load_checkpoint(latest / "model.safetensors").info
    calibration = metrics["calibration"]

    assert info.temperature == pytest.approx(calibration["temperature"])
    assert 0 <= calibration["test_ece_after"] <= 1 and 0 <= calibration["test_ece_before"] <= 1
    assert (latest / "calibration.png").read_bytes().startswith(b"\x89PNG")
    # the worker's probabilities are softmax(logits / T)
    classifier = Classifier.load(latest / "model.safetensors", "cpu", "float32")
    frame = cv2.imread(str(next((data / "circle").iterdir())))
    from sightd.preprocessing import preprocess_numpy

    logits = torch.from_numpy(classifier.logits(preprocess_numpy([frame], 32, info.mean, info.std)))
    expected = torch.softmax(logits / info.temperature, dim=1).numpy()
    assert np.allclose(classifier.probabilities([frame]), expected, atol=1e-6)


def test_metrics_record_the_folder_trained_on_and_the_plan(small_run):
    _, data, latest, _ = small_run
    metrics = json.loads((latest / "metrics.json").read_text())
    assert metrics["data_dir"] == str(data.resolve()) == metrics["config"]["data_dir"]
    assert metrics["plan"]["augment"] is True and metrics["plan"]["steps"] >= 300
    assert metrics["best_epoch"] in [row["epoch"] for row in metrics["epochs"]]


def test_temperature_softens_an_overconfident_model_and_never_sharpens():
    # given logits that are right 75% of the time, with overconfident and with timid margins
    labels = torch.tensor([0, 0, 0, 1] * 50)
    logits = torch.zeros(200, 2)
    logits[:, 0] = 1.0  # always says class 0: right 3 times in 4
    # then the overconfident model is softened towards 0.75 (margin 10 / T = log 3 ~ 1.1)
    assert 8 < fit_temperature(logits * 10, labels) < 10
    # and a timid one, or a validation split that is all right, is left as it is
    assert fit_temperature(logits * 0.2, labels) == pytest.approx(1.0, abs=1e-3)
    assert fit_temperature(logits * 10, torch.zeros(200, dtype=torch.long)) == pytest.approx(
        1.0, abs=1e-3
    )
    assert fit_temperature(torch.empty(0, 2), torch.empty(0, dtype=torch.long)) == 1.0


def _torchvision_state(arch: str) -> dict:
    import torchvision

    return torchvision.models.get_model(arch, weights=None).state_dict()


def test_init_copies_a_torchvision_state_dict_into_every_layer_but_the_head(tmp_path):
    from sightd.trainer.pretrained import load_init

    state = _torchvision_state("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = create_model("resnet18", 3)

    copied = load_init(model, "resnet18", str(path))

    ours = model.state_dict()
    assert torch.equal(ours["stem.0.weight"], state["conv1.weight"])
    assert torch.equal(ours["stages.3.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    assert torch.equal(ours["stages.1.0.shortcut.0.weight"], state["layer2.0.downsample.0.weight"])
    assert ours["fc.weight"].shape == (3, 512)  # the head stays ours, for our classes
    assert copied == len(state) - 2  # every tensor but fc.weight and fc.bias


@pytest.mark.parametrize(
    "arch, weights, message",
    [
        ("seed", "resnet18", "ImageNet weights exist for"),
        ("resnet50", "resnet18", "these are not resnet50 weights"),
    ],
)
def test_init_refuses_weights_that_do_not_fit(tmp_path, arch, weights, message):
    from sightd.trainer.pretrained import load_init

    path = tmp_path / "w.pth"
    torch.save(_torchvision_state(weights), path)
    with pytest.raises(SightdError, match=message):
        load_init(create_model(arch, 2), arch, str(path))


def test_init_never_unpickles_code(tmp_path):
    from sightd.trainer.pretrained import load_init

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "hook": print}, path)  # a function: pickled code
    with pytest.raises(SightdError, match="cannot be read as a state dict"):
        load_init(create_model("resnet18", 2), "resnet18", str(path))


def test_train_with_init_runs_from_the_command_line(tmp_path):
    data = write_shapes(tmp_path / "data", per_class=6, seed=1)
    weights = tmp_path / "resnet18.pth"
    torch.save(_torchvision_state("resnet18"), weights)
    args = ["train", str(data), "--out", str(tmp_path / "run"), "--arch", "resnet18"]
    args += ["--init", str(weights), "--image-size", "32", "--epochs", "1", "--min-steps", "0"]

    result = CliRunner().invoke(main, args)

    assert result.exit_code == 0, result.output
    assert "started from ImageNet weights (120 tensors)" in result.output
    assert load_checkpoint(tmp_path / "run" / "model.safetensors").info.arch == "resnet18"
