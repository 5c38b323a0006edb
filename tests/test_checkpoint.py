"""Checkpoints: one file rebuilds the classifier; anything else is refused, nothing unpickled."""

import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sightd.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from sightd.cli import main
from sightd.errors import SightdError
from sightd.model import create_model


class TouchOnUnpickle:
    """A pickle payload that runs code when loaded: here, harmlessly, creating a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = create_model("seed", 3).eval()
    info = ModelInfo("seed", ["cat", "dog", "fox"], 64, [0.4, 0.5, 0.6], [0.2, 0.3, 0.4], 0.875)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, info)
    return path, model, info


def test_a_saved_checkpoint_rebuilds_the_same_predictions_and_description(saved):
    path, model, info = saved
    checkpoint = load_checkpoint(path)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(checkpoint.model(x), model(x))
    assert checkpoint.info == info
    assert len(checkpoint.digest) == 12


@pytest.mark.parametrize("zip_format", [True, False], ids=["torch.save", "legacy-pickle"])
def test_a_pickled_torch_file_is_refused_and_its_payload_never_runs(tmp_path, zip_format):
    # given a torch.save file whose unpickling would create a marker file
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "model.safetensors"
    payload = {"weights": torch.zeros(2), "payload": TouchOnUnpickle(marker)}
    torch.save(payload, evil, _use_new_zipfile_serialization=zip_format)
    control = tmp_path / "control-ran"  # proves such a payload is live when unpickled
    pickle.loads(pickle.dumps(TouchOnUnpickle(control)))
    assert control.exists()

    # when sightd loads it, directly or through a command
    with pytest.raises(SightdError, match="not a sightd checkpoint"):
        load_checkpoint(evil)
    result = CliRunner().invoke(main, ["predict", str(evil), str(evil)])

    # then it is a one-line error and the payload never ran
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and result.output.startswith("Error:")
    assert not marker.exists()


def test_a_truncated_checkpoint_is_a_one_line_error(saved, tmp_path):
    path, _, _ = saved
    cut = tmp_path / "cut.safetensors"
    data = path.read_bytes()
    for size in (4, 100, len(data) // 2):
        cut.write_bytes(data[:size])
        with pytest.raises(SightdError, match="truncated"):
            load_checkpoint(cut)


def test_a_garbage_file_is_a_one_line_error(tmp_path):
    garbage = tmp_path / "model.safetensors"
    garbage.write_bytes(bytes(range(256)) * 40)
    result = CliRunner().invoke(main, ["eval", str(garbage), str(tmp_path), "--split", "all"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert str(garbage) in result.output and "not a sightd checkpoint" in result.output


def test_tensors_that_do_not_fit_the_arch_are_refused(tmp_path):
    # given seed weights labelled as resnet18, and 3-class weights labelled with 4 classes
    seed_weights = create_model("seed", 3)
    for label_as in (
        ModelInfo("resnet18", ["a", "b", "c"], 64, [0.5] * 3, [0.5] * 3),
        ModelInfo("seed", ["a", "b", "c", "d"], 64, [0.5] * 3, [0.5] * 3),
    ):
        path = tmp_path / f"{label_as.arch}-{len(label_as.classes)}.safetensors"
        save_checkpoint(path, seed_weights, label_as)
        with pytest.raises(SightdError, match="do not match arch"):
            load_checkpoint(path)


def test_a_missing_model_file_says_how_to_make_one(tmp_path):
    with pytest.raises(SightdError, match="sightd train"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_written_files_get_the_usual_permissions_not_the_temp_files_0600(tmp_path):
    from sightd.atomic import atomic_write_bytes

    target = tmp_path / "model.safetensors"
    atomic_write_bytes(target, b"data")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
