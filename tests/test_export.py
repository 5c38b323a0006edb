"""`sightd export`: each format: the checkpoint's labels and metadata, and a self-check."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import COLORS, color_frame

from sightd import export
from sightd.checkpoint import load_checkpoint
from sightd.classifier import Classifier
from sightd.cli import main
from sightd.errors import SightdError
from sightd.preprocessing import preprocess


@pytest.fixture
def checkpoint(tmp_path, color_checkpoint):
    path = tmp_path / "model.safetensors"
    path.write_bytes(color_checkpoint.read_bytes())
    return path


def frames(n: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    names = sorted(COLORS)
    return [color_frame(names[i % len(names)], (120, 160), rng) for i in range(n)]


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_an_export_gives_the_checkpoints_labels_and_carries_its_metadata(checkpoint, fmt):
    # given a trained checkpoint, when it is exported
    out = export.export_model(checkpoint, fmt)
    assert out == export.default_path(checkpoint, fmt) and out.exists()
    meta = export.read_export_metadata(out)
    served = Classifier.load(checkpoint, "cpu", "float32")
    info = served.info
    assert meta["source_digest"] == load_checkpoint(checkpoint).digest
    assert meta["classes"] == info.classes and meta["image_size"] == info.image_size
    assert meta["mean"] == info.mean and meta["temperature"] == info.temperature
    # then the exported file, run with its own runtime at a batch size it was not traced with,
    # gives the checkpoint's probabilities (within the format's tolerance) and labels
    images = frames()
    batch = preprocess(images, info.image_size, info.mean, info.std).numpy()
    logits = export._run(fmt, out, batch)
    got = export._softmax(logits / meta["temperature"])
    expected = served.probabilities(images)
    assert np.abs(got - expected).max() <= export.TOLERANCE[fmt]
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_an_export_that_disagrees_with_the_checkpoint_is_not_kept(checkpoint, monkeypatch):
    real_run = export._run
    # a runtime that swaps two classes' outputs, as a broken conversion could
    monkeypatch.setattr(export, "_run", lambda *args: real_run(*args)[:, [1, 0, 2]])
    with pytest.raises(
        SightdError, match="disagrees with the checkpoint: logits or probabilities differ"
    ):
        export.export_model(checkpoint, "onnx")
    assert not export.default_path(checkpoint, "onnx").exists()


def test_the_command_writes_where_asked_and_says_so(checkpoint, tmp_path):
    target = tmp_path / "out" / "door.openvino.xml"
    result = CliRunner().invoke(
        main, ["export", str(checkpoint), "--format", "openvino", "--out", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {target} (openvino, checked to 0.0001)"
    assert target.exists() and target.with_suffix(".bin").exists()
    assert not list(target.parent.glob("tmp*"))  # the staging folder is gone
    bad = CliRunner().invoke(main, ["export", str(tmp_path / "none.safetensors")])
    assert bad.exit_code == 1 and "does not exist" in bad.output


def test_reading_an_onnx_or_openvino_export_imports_no_torch(checkpoint):
    paths = [export.export_model(checkpoint, fmt) for fmt in ("onnx", "openvino")]
    code = (
        "import sys; from sightd.export import read_export_metadata;"
        f"print([read_export_metadata(p)['arch'] for p in {[str(p) for p in paths]!r}]);"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["['seed',", "'seed']", "False"], result.stderr
