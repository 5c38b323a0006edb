"""`sightd eval` and `sightd predict` as a user meets them, and the figures behind them."""

import json
import re
import shutil
import struct
from dataclasses import replace

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import COLORS, color_frame, write_color_dataset

from sightd.checkpoint import load_checkpoint, save_checkpoint
from sightd.cli import main
from sightd.trainer.metrics import classification_report, expected_calibration_error
from sightd.trainer.plots import CELL_INCHES, MISCLASSIFIED_COLUMNS, save_reliability

CLASSES = sorted(COLORS)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two torch threads on two cores that others share make each step wait for the slower
    one: a training step takes 50x longer. One thread keeps these tests quick on a busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_color_model(path, size: int = 32) -> None:
    """A `seed` model that tells blue, green and red frames apart, trained in about a second."""
    import torch

    from sightd.checkpoint import ModelInfo
    from sightd.model import create_model
    from sightd.preprocessing import preprocess

    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    frames = [color_frame(name, (48, 64), rng) for name in CLASSES for _ in range(4)]
    targets = torch.arange(len(CLASSES)).repeat_interleave(4)
    batch = preprocess(frames, size)
    model = create_model("seed", len(CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(15):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), targets).backward()
        optimizer.step()
    save_checkpoint(path, model.eval(), ModelInfo("seed", CLASSES, size, [0.5] * 3, [0.5] * 3))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder as `sightd train` leaves it (model + split.json) and its colour dataset."""
    tmp = tmp_path_factory.mktemp("eval")
    data = write_color_dataset(tmp / "data", per_class=6)
    run_dir = tmp / "run"
    run_dir.mkdir()
    train_color_model(run_dir / "model.safetensors")
    paths = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    split = {"classes": CLASSES, "seed": 0, "train": [], "val": [], "test": paths[::2]}
    (run_dir / "split.json").write_text(json.dumps(split))
    return run_dir / "model.safetensors", data


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header.startswith(PNG), f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_predict_labels_a_folder_tree_and_reports_a_missing_file_without_stopping(run, tmp_path):
    model, data = run
    folder = tmp_path / "photos"
    shutil.copytree(data / "red", folder / "nested" / "red")
    shutil.copy(data / "blue" / "000.png", folder / "blue.PNG")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes((data / "green" / "000.png").read_bytes())
    shutil.copytree(data / "green", folder / ".thumbnails")
    missing = tmp_path / "gone.jpg"

    result = CliRunner().invoke(main, ["predict", str(model), str(missing), str(folder)])

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"skipping {missing}: no such file or folder"]
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    expected = [folder / "blue.PNG", *sorted((folder / "nested" / "red").glob("*.png"))]
    assert [row[0] for row in rows] == [str(p) for p in expected]
    assert [row[1] for row in rows] == ["blue"] + ["red"] * 6


def test_predict_says_unknown_with_the_top_guess_below_the_minimum_confidence(run, tmp_path):
    model, data = run
    # A temperature this high flattens the calibrated probabilities to about 1/3 each.
    checkpoint = load_checkpoint(model)
    flat = tmp_path / "flat.safetensors"
    save_checkpoint(flat, checkpoint.model, replace(checkpoint.info, temperature=1000.0))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"min_confidence": 0.9}}))
    image = str(data / "green" / "001.png")
    args = ["predict", str(flat), image, "-c", str(config)]

    plain = CliRunner().invoke(main, args)
    as_json = CliRunner().invoke(main, [*args, "--json"])
    overridden = CliRunner().invoke(main, [*args, "--min-confidence", "0.1"])

    assert plain.exit_code == as_json.exit_code == overridden.exit_code == 0, plain.output
    assert re.fullmatch(
        rf"{re.escape(image)}\tunknown\t0\.3\d+\t\(top guess: green\)\n", plain.output
    )
    record = json.loads(as_json.output)
    assert record["label"] == "unknown" and record["top"] == "green"
    assert max(record["scores"].values()) == record["confidence"] < 0.4
    assert overridden.output.split("\t")[1] == "green"


def test_per_class_accuracy_counts_true_negatives_and_differs_from_recall():
    # class 0: 2 of its 4 images found (recall 0.5), one class-2 image taken for it (FP 1),
    # 3 images of other classes rightly kept out of it (TN 3): accuracy (2 + 3) / 8
    truth = [0, 0, 0, 0, 1, 1, 2, 2]
    guess = [0, 0, 1, 2, 1, 1, 2, 0]

    row = classification_report(truth, guess, ["a", "b", "c"])["per_class"]["a"]

    assert row["recall"] == 0.5 and row["accuracy"] == 0.625
    assert row["precision"] == pytest.approx(2 / 3) and row["f1"] == pytest.approx(4 / 7)


def test_eval_names_its_plots_after_the_split_so_all_does_not_overwrite_test(run):
    model, data = run
    runner = CliRunner()

    on_test = runner.invoke(main, ["eval", str(model), str(data)])
    on_all = runner.invoke(main, ["eval", str(model), str(data), "--split", "all"])

    assert on_test.exit_code == on_all.exit_code == 0, on_test.output + on_all.output
    assert "on 9 images (test split" in on_test.output and "on 18 images" in on_all.output
    for split in ("test", "all"):
        assert png_size(model.parent / f"eval_confusion_matrix_{split}.png")
        assert png_size(model.parent / f"misclassified_{split}.png")
    assert "no image misclassified" in on_all.output
    assert re.search(r"^expected calibration error 0\.\d{4} \(15 bins", on_all.output, re.M)


def test_eval_draws_the_most_confident_mistakes_in_a_grid(run, tmp_path):
    model, data = run
    swapped = tmp_path / "mislabelled"  # someone filed the blue and green photos the wrong way
    shutil.copytree(data / "blue", swapped / "green")
    shutil.copytree(data / "green", swapped / "blue")
    shutil.copytree(data / "red", swapped / "red")
    grid = tmp_path / "worst.png"

    args = ["eval", str(model), str(swapped), "--split", "all", "--misclassified", str(grid)]
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 0, result.output
    assert "12 misclassified" in result.output
    listed = re.findall(r"^  (\S+)\ttrue (\w+)\tpredicted (\w+)\t(\d\.\d{4})$", result.output, re.M)
    assert len(listed) == 12 and {row[1:3] for row in listed} == {
        ("blue", "green"),
        ("green", "blue"),
    }
    confidences = [float(row[3]) for row in listed]
    assert confidences == sorted(confidences, reverse=True)
    rows = -(-12 // MISCLASSIFIED_COLUMNS)
    cell_w, cell_h = (round(inches * 100) for inches in CELL_INCHES)
    assert png_size(grid) == (MISCLASSIFIED_COLUMNS * cell_w, rows * cell_h)
    # a calibration error near 2/3: 12 of 18 wrong, yet the model is sure of each
    ece = float(re.search(r"expected calibration error (\d\.\d+)", result.output)[1])
    assert ece > 0.5


def test_expected_calibration_error_matches_a_hand_computed_example():
    # bin (14/15, 1]: 4 images at 0.95, 3 right: gap 0.20; bin (8/15, 9/15]: 2 at 0.55, 1
    # right: gap 0.05; weighted by 4/6 and 2/6: (4 * 0.20 + 2 * 0.05) / 6 = 0.15
    confidences = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, True, True, False, True, False])

    assert expected_calibration_error(confidences, correct) == pytest.approx(0.15)
    assert expected_calibration_error(confidences, correct, bins=1) == pytest.approx(
        abs(4 / 6 - 4.9 / 6)
    )
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([True, False])) == 0.0
    assert expected_calibration_error(np.array([]), np.array([], bool)) == 0.0


def test_reliability_diagram_is_written_whole(tmp_path):
    rng = np.random.default_rng(0)
    confidences = rng.uniform(0.3, 1.0, 200)
    before = (confidences, rng.uniform(size=200) < confidences - 0.2)  # overconfident
    after = (confidences - 0.2, before[1])

    save_reliability(tmp_path / "calibration.png", before, after)

    assert png_size(tmp_path / "calibration.png")
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.png"]
