"""Engines: every one serves the checkpoint's labels, only from an export of that very checkpoint,
and a worker whose engine is not torch never imports torch."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import COLORS, color_frame, free_port, wait_for, write_video
from pipeline_support import collect

from sightd import export
from sightd.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from sightd.classifier import Classifier
from sightd.config import ModelConfig
from sightd.engines import base, engine_files
from sightd.errors import SightdError
from sightd.model import create_model
from sightd.preprocessing import preprocess
from sightd.publishers.model_watcher import ModelWatcher, file_signature

# Largest difference in probability from the checkpoint's own network, served in float32: the
# folded network in another runtime rounds differently, nothing more.
FLOAT32_TOLERANCE = {"torch": 1e-5, "onnxruntime": 1e-5, "openvino": 1e-5}
# precision auto: bfloat16 where the CPU does it natively (torch, OpenVINO), as README says.
AUTO_TOLERANCE = {"torch": 0.02, "onnxruntime": 1e-5, "openvino": 0.02}


@pytest.fixture(scope="module")
def model(tmp_path_factory, color_checkpoint) -> Path:
    """A copy of the trained colour model in a folder of its own: its exports land beside it."""
    path = tmp_path_factory.mktemp("engines") / "model.safetensors"
    path.write_bytes(color_checkpoint.read_bytes())
    return path


def frames() -> list[np.ndarray]:
    """Each colour at several sizes, and blends of two colours, which the model is less sure of."""
    rng = np.random.default_rng(11)
    names = sorted(COLORS)
    out = [color_frame(n, size, rng) for n in names for size in ((48, 64), (120, 160), (480, 640))]
    for a, b in zip(names, names[1:] + names[:1], strict=True):
        blend = 0.65 * color_frame(a, (90, 120), rng) + 0.35 * color_frame(b, (90, 120), rng)
        out.append(blend.astype(np.uint8))
    return out


def checkpoint_probabilities(path: Path, images: list[np.ndarray]) -> np.ndarray:
    """What the checkpoint itself says: its unfolded network in float32, softmax(logits / T)."""
    checkpoint = load_checkpoint(path)
    info = checkpoint.info
    with torch.no_grad():
        logits = checkpoint.model.eval()(preprocess(images, info.image_size, info.mean, info.std))
    return torch.softmax(logits / info.temperature, dim=1).numpy()


@pytest.mark.parametrize("precision", ["float32", "auto"])
@pytest.mark.parametrize("engine", base.ENGINES)
def test_every_engine_serves_the_checkpoints_labels(model, engine, precision):
    # given a trained checkpoint and frames, when each engine serves it
    images = frames()
    expected = checkpoint_probabilities(model, images)
    served = Classifier.load(model, "cpu", precision, engine=engine, threads=1)

    got = served.probabilities(images)

    # then the labels are the checkpoint's, and the probabilities within the engine's tolerance
    assert served.engine.name == engine and served.digest == load_checkpoint(model).digest
    assert (got.argmax(1) == expected.argmax(1)).all()
    tolerance = (FLOAT32_TOLERANCE if precision == "float32" else AUTO_TOLERANCE)[engine]
    assert np.abs(got - expected).max() <= tolerance
    assert got.dtype == np.float32 and np.allclose(got.sum(1), 1.0, atol=1e-5)


def relabelled(source: Path, out: Path, classes: list[str]) -> Path:
    """The same weights under other class names: another checkpoint, another digest."""
    checkpoint = load_checkpoint(source)
    info = checkpoint.info
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, checkpoint.model, ModelInfo(info.arch, classes, 64, info.mean, info.std))
    return out


def strip_metadata(path: Path, fmt: str) -> None:
    """The export as a stranger would have made it: the same network, no sightd metadata."""
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(path))
        del proto.metadata_props[:]
        onnx.save(proto, str(path))
    else:
        import openvino

        model = openvino.Core().read_model(str(path))
        model.set_rt_info("{}", [export.METADATA_KEY])
        openvino.save_model(model, str(path.with_name("bare.xml")), compress_to_fp16=False)
        for suffix in (".xml", ".bin"):
            os.replace(path.with_name("bare" + suffix), path.with_suffix(suffix))


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("defect", ["another checkpoint's", "no metadata", "half-copied"])
def test_a_stale_or_foreign_export_is_never_served_but_made_again(
    tmp_path, color_checkpoint, engine, defect, caplog
):
    # given an export beside the checkpoint that is not of it
    fmt = base.EXPORT_FORMAT[engine]
    path = tmp_path / "model.safetensors"
    path.write_bytes(color_checkpoint.read_bytes())
    other = relabelled(color_checkpoint, tmp_path / "other" / "model.safetensors", list("xyz"))
    stale = export.export_model(other, fmt, out=export.default_path(path, fmt))
    if defect == "no metadata":
        strip_metadata(stale, fmt)
    if defect == "half-copied":  # the weights of an OpenVINO export, the whole ONNX file
        damaged = stale.with_suffix(".bin") if fmt == "openvino" else stale
        damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])

    # when the engine serves the checkpoint
    with caplog.at_level(logging.INFO, logger="sightd.engines"):
        served = Classifier.load(path, "cpu", "float32", engine=engine)

    # then it says why the file was refused, and serves a new export of this very checkpoint
    why = {
        "another checkpoint's": "was made from checkpoint",
        "no metadata": "carries no sightd metadata",
        "half-copied": "cannot be",
    }[defect]
    assert why in caplog.text and "making it again" in caplog.text
    assert export.read_export_metadata(stale)["source_digest"] == served.digest
    assert served.info.classes == sorted(COLORS)
    assert [p.label for p in served.predict(frames()[:9])] == [
        name for name in sorted(COLORS) for _ in range(3)
    ]


def test_a_read_only_model_folder_puts_the_export_in_the_cache(tmp_path, model, monkeypatch):
    # given a model folder that cannot be written (as root, os.access is the only way to say so)
    path = tmp_path / "ro" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(model.read_bytes())
    real_access = os.access
    monkeypatch.setattr(
        engine_files.os, "access", lambda p, mode: Path(p) != path.parent and real_access(p, mode)
    )
    monkeypatch.setenv("SIGHTD_CACHE_DIR", str(tmp_path / "cache"))

    # when it is served twice through ONNX Runtime
    first = Classifier.load(path, "cpu", engine="onnxruntime")
    monkeypatch.setattr(engine_files, "run_export", lambda *a, **k: pytest.fail("made twice"))
    second = Classifier.load(path, "cpu", engine="onnxruntime")

    # then the export is made once, in the cache, under the checkpoint's digest
    cached = tmp_path / "cache" / "engines" / first.digest / "model.onnx"
    assert cached.is_file() and not export.default_path(path, "onnx").exists()
    assert second.digest == first.digest


def test_a_checkpoint_that_cannot_be_exported_is_refused_in_one_line(tmp_path):
    # given a checkpoint whose tensors are not those of its arch
    path = tmp_path / "model.safetensors"
    save_checkpoint(
        path, create_model("seed", 3), ModelInfo("resnet18", list("abc"), 64, [0.5] * 3, [0.5] * 3)
    )
    # when an engine other than torch is asked to serve it, then the export's reason is the error
    with pytest.raises(SightdError) as refused:
        Classifier.load(path, "cpu", engine="onnxruntime")
    message = str(refused.value)
    assert "cannot make the onnx export" in message and "do not match arch" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("engine", "device", "installed", "gpu", "chosen"),
    [
        ("auto", "cpu", {"openvino", "onnxruntime"}, False, "openvino"),
        ("auto", "auto", {"onnxruntime"}, False, "onnxruntime"),
        ("auto", "auto", set(), False, "torch"),
        ("auto", "auto", {"openvino", "onnxruntime"}, True, "torch"),
        ("auto", "cuda", {"openvino", "onnxruntime"}, False, "torch"),
        ("onnxruntime", "cuda", set(), True, "onnxruntime"),
    ],
)
def test_auto_picks_by_the_stated_rule(monkeypatch, engine, device, installed, gpu, chosen):
    monkeypatch.setattr(base, "installed", lambda name: name in installed)
    monkeypatch.setattr(base, "gpu_visible", lambda: gpu)
    assert base.choose_engine(engine, device) == chosen


def test_the_config_knows_every_engine_and_a_missing_one_says_how_to_get_it(monkeypatch, model):
    assert ModelConfig.model_fields["engine"].annotation.__args__ == base.ENGINE_CHOICES
    monkeypatch.setattr(base, "installed", lambda name: name == "torch")
    with pytest.raises(SightdError, match=r"pip install 'sightd\[openvino\]'"):
        Classifier.load(model, "cpu", engine="openvino")


@pytest.mark.parametrize("engine", base.ENGINES)
def test_hot_reload_and_the_bad_swap_refusal_work_with_every_engine(tmp_path, model, engine):
    # given a watcher over the model file a worker with this engine serves
    path = tmp_path / "model.safetensors"
    path.write_bytes(model.read_bytes())
    config = ModelConfig(path=str(path), device="cpu", engine=engine)
    watcher = ModelWatcher(config, file_signature(path))
    try:
        # when a new checkpoint replaces it, then a tested classifier of it is handed over
        relabelled(model, path, ["azure", "lime", "crimson"])
        new = wait_for(lambda: watcher.poll() or watcher.take(), timeout=120, what="the new model")
        assert new.engine.name == engine and new.info.classes == ["azure", "lime", "crimson"]
        assert new.predict(frames()[:1])[0].label == "azure"
        # when a truncated copy replaces it, then it is refused with the reason, and nothing
        # is handed over
        path.write_bytes(path.read_bytes()[:-1000])
        wait_for(lambda: watcher.poll() or watcher.errors, timeout=30, what="the refusal")
        assert "truncated" in watcher.last_error and watcher.take() is None
    finally:
        watcher.close()


WORKER_WITHOUT_TORCH = """
import json, sys
import numpy as np
import sightd.publishers.inference as inference
from sightd.config import ModelConfig
from sightd.protocol import pack_frame, unpack_frame
from sightd.publishers.model_watcher import load_tested

config = ModelConfig(path=sys.argv[1], device="cpu", engine=sys.argv[2])
classifier = load_tested(config, max_batch=2)
frame = np.full((480, 640, 3), (30, 40, 210), np.uint8)  # red, in BGR
header, payload = unpack_frame(pack_frame("cam0", 0, frame, 0.0))
image = inference.model_input(header, payload, classifier.info.image_size, None)
label = classifier.predict([image])[0].label
print(json.dumps({"label": label, "engine": classifier.engine.name,
                  "torch": "torch" in sys.modules}))
"""


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_a_worker_with_another_engine_serves_a_frame_without_importing_torch(
    tmp_path, model, engine
):
    # given a checkpoint without any export yet
    path = tmp_path / "model.safetensors"
    path.write_bytes(model.read_bytes())
    # when a fresh interpreter imports the worker, loads the model and serves a JPEG frame
    done = subprocess.run(
        [sys.executable, "-c", WORKER_WITHOUT_TORCH, str(path), engine],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # then it labels it, and torch was never imported (its export was made in a subprocess)
    assert json.loads(done.stdout) == {"label": "red", "engine": engine, "torch": False}
    assert export.default_path(path, base.EXPORT_FORMAT[engine]).is_file()


@pytest.mark.slow
def test_under_sightd_run_the_onnxruntime_worker_has_no_torch_and_reloads(tmp_path, model):
    # given `sightd run` with engine onnxruntime, one camera and a model that hot-reloads
    path = tmp_path / "model.safetensors"
    path.write_bytes(model.read_bytes())
    video = write_video(tmp_path / "red.avi", [color_frame("red", (120, 160))] * 10, fps=10)
    endpoints = {
        n: f"tcp://127.0.0.1:{free_port()}" for n in ("frames", "labels", "status", "status_in")
    }
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cameras": [{"name": "cam0", "source": str(video), "fps": 10}],
                "transport": {**endpoints, "status_interval": 0.5},
                "http": {"enabled": False},
                "model": {"path": str(path), "device": "cpu", "engine": "onnxruntime"},
                "subscribers": [],
            }
        )
    )
    labels, status = collect("label", config), collect("status", config)
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115
    run = subprocess.Popen(
        [sys.executable, "-m", "sightd", "run", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # when labels flow
        assert labels.wait_for(lambda m: True, timeout=120)["label"] == "red"
        worker = status.wait_for(lambda m: m["component"] == "infer" and "model" in m)
        tree = status.wait_for(lambda m: m["component"] == "supervisor" and "children" in m)
        pid = tree["children"]["infer"]["pid"]
        # then the worker says torch is not loaded, and no torch library is mapped into it
        assert (
            worker["model"]["engine"] == "onnxruntime" and worker["model"]["torch_loaded"] is False
        )
        maps = Path(f"/proc/{pid}/maps").read_text() if sys.platform.startswith("linux") else ""
        assert "libtorch" not in maps and "onnxruntime" in maps
        # and a new checkpoint is served (its export made beside it), still without torch
        relabelled(model, path, ["azure", "lime", "crimson"])
        assert labels.wait_for(lambda m: m["label"] == "crimson", timeout=120)
        after = status.wait_for(lambda m: m["component"] == "infer" and m.get("reloads", 0) >= 1)
        assert (
            after["model"]["torch_loaded"] is False
            and "libtorch" not in Path(f"/proc/{pid}/maps").read_text()
        )
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(timeout=30)
        log.close()
