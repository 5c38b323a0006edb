"""`sightd train`, `eval` and `predict` end to end on a tiny real folder dataset."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner
from conftest import COLORS, color_frame, write_color_dataset

from sightd.checkpoint import load_checkpoint
from sightd.cli import main
from sightd.trainer.run_folder import point_latest_at

CLASSES = sorted(COLORS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train once for the whole module: 3 colours x 12 images (plus a broken file), 3 epochs.

    32-pixel inputs keep it quick; everything else is the real command with its defaults."""
    tmp = tmp_path_factory.mktemp("e2e")
    data = write_color_dataset(tmp / "data", per_class=12)
    (data / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({"train": {"out_dir": str(tmp / "runs"), "epochs": 9}}))
    args = ["train", str(data), "-c", str(config), "--epochs", "3", "--batch-size", "8"]
    args += ["--image-size", "32", "--min-steps", "0"]  # exactly the epochs asked for
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return tmp, data, tmp / "runs" / "latest", result.output


def test_train_writes_a_complete_run_and_points_latest_at_it(trained):
    tmp, _, latest, output = trained
    assert latest.is_symlink() and latest.resolve().parent == (tmp / "runs").resolve()
    for name in ["model.safetensors", "metrics.json", "split.json"]:
        assert (latest / name).stat().st_size > 0
    for name in ["curves.png", "confusion_matrix.png"]:
        assert (latest / name).read_bytes().startswith(b"\x89PNG")
    assert not list(tmp.rglob("*.tmp"))
    # the flag (3) beat the config file (9); one line per epoch with loss, accuracy, time
    epoch_lines = re.findall(
        r"epoch +\d+/3 +train loss \d+\.\d+ +val accuracy \d\.\d+ +val loss \d+\.\d+ +elapsed "
        r"\d+\.\ds",
        output,
    )
    assert len(epoch_lines) == 3


def test_metrics_and_checkpoint_describe_the_run(trained):
    _, _, latest, _ = trained
    metrics = json.loads((latest / "metrics.json").read_text())
    split = json.loads((latest / "split.json").read_text())

    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["train_images_per_s"] > 0
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]
    assert all({"train_loss", "val_accuracy"} <= set(row) for row in metrics["epochs"])
    assert list(metrics["per_class"]) == CLASSES
    assert {"precision", "recall", "accuracy"} <= set(metrics["per_class"]["red"])
    matrix = metrics["confusion_matrix"]
    assert len(matrix) == 3 and sum(map(sum, matrix)) == len(split["test"])
    # 36 readable images (the broken one is skipped), split three ways without overlap
    parts = [set(split[name]) for name in ("train", "val", "test")]
    assert sum(map(len, parts)) == 36 and len(set.union(*parts)) == 36
    assert "red/broken.jpg" not in set.union(*parts)

    info = load_checkpoint(latest / "model.safetensors").info
    assert info.classes == CLASSES and info.arch == "seed" and info.image_size == 32
    assert info.test_accuracy == metrics["test_accuracy"]


def test_colours_are_learnt(trained):
    _, _, latest, _ = trained
    metrics = json.loads((latest / "metrics.json").read_text())
    assert metrics["test_accuracy"] == 1.0, metrics["epochs"]


def test_eval_on_the_test_split_reproduces_the_training_figure(trained):
    tmp, data, latest, _ = trained
    model = latest / "model.safetensors"
    expected = json.loads((latest / "metrics.json").read_text())["test_accuracy"]
    plot = tmp / "eval.png"

    result = CliRunner().invoke(main, ["eval", str(model), str(data), "--plot", str(plot)])

    assert result.exit_code == 0, result.output
    assert f"accuracy {expected:.4f}" in result.output
    assert all(re.search(rf"^{name} +\d\.\d{{4}}", result.output, re.M) for name in CLASSES)
    assert "confusion matrix" in result.output
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_eval_on_all_images_counts_every_readable_file(trained):
    _, data, latest, _ = trained
    args = ["eval", str(latest / "model.safetensors"), str(data), "--split", "all"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "on 36 images" in result.output


def test_eval_test_split_without_split_json_says_what_to_do(trained, tmp_path):
    _, data, latest, _ = trained
    lonely = tmp_path / "model.safetensors"
    lonely.write_bytes((latest / "model.safetensors").read_bytes())

    result = CliRunner().invoke(main, ["eval", str(lonely), str(data)])

    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "split.json" in result.output and "--split all" in result.output


def test_predict_prints_one_line_per_image_and_json_on_request(trained, tmp_path):
    import cv2

    _, data, latest, _ = trained
    model = str(latest / "model.safetensors")
    images = []
    for name in CLASSES:  # fresh camera-sized frames, not the training files
        images.append(tmp_path / f"{name}.jpg")
        cv2.imwrite(str(images[-1]), color_frame(name, (480, 640)))

    plain = CliRunner().invoke(main, ["predict", model, *map(str, images)])
    as_json = CliRunner().invoke(main, ["predict", model, *map(str, images), "--json"])

    assert plain.exit_code == 0 and as_json.exit_code == 0, plain.output + as_json.output
    rows = [line.split("\t") for line in plain.output.splitlines()]
    assert [row[0] for row in rows] == [str(p) for p in images]
    assert [row[1] for row in rows] == CLASSES
    records = [json.loads(line) for line in as_json.output.splitlines()]
    assert [r["label"] for r in records] == CLASSES
    for record in records:
        assert 0 <= record["confidence"] <= 1 and set(record["scores"]) == set(CLASSES)
        assert abs(sum(record["scores"].values()) - 1) < 1e-4


def test_predict_reports_an_undecodable_image_and_labels_the_rest(trained, tmp_path):
    _, data, latest, _ = trained
    good = next((data / "blue").glob("*.png"))
    bad = tmp_path / "bad.png"
    bad.write_text("no pixels here")
    result = CliRunner().invoke(
        main, ["predict", str(latest / "model.safetensors"), str(bad), str(good)]
    )
    assert result.exit_code == 1
    assert result.stderr == f"skipping {bad}: cannot be decoded as an image\n"
    assert result.stdout.startswith(f"{good}\tblue\t")


def test_latest_is_swapped_to_the_newest_run_and_left_alone_for_runs_elsewhere(tmp_path):
    runs = tmp_path / "runs"
    first, second, elsewhere = runs / "a", runs / "b", tmp_path / "mine"
    for folder in (first, second, elsewhere):
        folder.mkdir(parents=True)
    point_latest_at(runs, first)
    point_latest_at(runs, second)
    point_latest_at(runs, elsewhere)
    assert os.readlink(runs / "latest") == "b"
    assert sorted(p.name for p in runs.iterdir()) == ["a", "b", "latest"]  # no temp link left


def test_ctrl_c_during_training_leaves_no_partial_files(trained, tmp_path):
    _, data, _, _ = trained
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"train": {"out_dir": str(tmp_path / "runs")}}))
    command = [sys.executable, "-m", "sightd", "train", str(data), "-c", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [*command, "--epochs", "500", "--batch-size", "8", "--image-size", "32"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        for line in process.stdout:  # wait until training is under way
            if line.startswith("epoch") or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode != 0
    assert "Traceback" not in errors
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.tmp"))
    assert not list(tmp_path.rglob("model.safetensors"))
    assert not (tmp_path / "runs" / "latest").exists()
