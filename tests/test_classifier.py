"""The classifier serves the checkpoint's network prepared for inference, not a different one."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import torch
from conftest import COLORS, color_frame

from sightd.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from sightd.classifier import Classifier
from sightd.config import ModelConfig
from sightd.errors import SightdError
from sightd.model import create_model, model_names
from sightd.preprocessing import preprocess
from sightd.publishers.model_watcher import load_tested


def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [color_frame(name, (120, 160), rng) for name in sorted(COLORS) for _ in range(3)]


def test_float32_serving_gives_the_checkpoints_own_probabilities(color_checkpoint):
    """Given a checkpoint, when it is served in float32 (batch norm folded into the convs,
    channels_last), then the probabilities are the plain network's to float rounding."""
    network = load_checkpoint(color_checkpoint).model.eval()
    with torch.no_grad():
        expected = torch.softmax(network(preprocess(frames())), 1).numpy()
    served = Classifier.load(color_checkpoint, "cpu", "float32")
    assert served.engine.dtype == torch.float32
    np.testing.assert_allclose(served.probabilities(frames()), expected, atol=1e-5)


@pytest.mark.parametrize("arch", model_names())
def test_every_registered_network_is_served_unchanged_in_float32(arch, tmp_path):
    """Batch norm folding holds for every block type (basic, bottleneck, projections)."""
    torch.manual_seed(0)
    network = create_model(arch, 4).eval()
    for module in network.modules():  # trained-looking statistics, so folding has work to do
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, network, ModelInfo(arch, list("abcd"), 64, [0.5] * 3, [0.5] * 3))
    with torch.no_grad():
        expected = torch.softmax(network(preprocess(frames())), 1).numpy()
    served = Classifier.load(path, "cpu", "float32")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.engine.model.modules())
    np.testing.assert_allclose(served.probabilities(frames()), expected, atol=1e-4)


def test_bfloat16_serving_gives_the_same_labels_and_nearly_the_same_confidence(
    color_checkpoint,
):
    exact = Classifier.load(color_checkpoint, "cpu", "float32").predict(frames())
    fast = Classifier.load(color_checkpoint, "cpu", "bfloat16").predict(frames())
    assert (
        [p.label for p in fast]
        == [p.label for p in exact]
        == [name for name in sorted(COLORS) for _ in range(3)]
    )
    for a, b in zip(fast, exact, strict=True):
        assert abs(a.confidence - b.confidence) < 0.02


def test_loading_a_model_never_disturbs_the_one_serving_in_another_thread(color_checkpoint):
    """Given the worker serving while its model watcher loads a new model in a thread (a hot
    reload), then every forward pass of the serving model still works."""
    serving = Classifier.load(color_checkpoint, "cpu")
    stop, errors = threading.Event(), []

    def reload_again_and_again():
        while not stop.is_set():
            Classifier.load(color_checkpoint, "cpu")

    loader = threading.Thread(target=reload_again_and_again)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # threads take turns often: a window in a load cannot hide
    loader.start()
    try:  # 3 s: about 80 reloads here, each load used to break the other thread for ~30 ms
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                serving.predict(frames()[:1])
            except Exception as exc:  # collected: the assertion below shows what broke
                errors.append(repr(exc))
    finally:
        stop.set()
        loader.join()
        sys.setswitchinterval(switch_interval)
    assert errors == []


def test_precision_is_a_checked_config_key(tmp_path):
    with pytest.raises(ValueError, match="precision"):
        ModelConfig(precision="float16")


def test_load_tested_warms_every_batch_size_and_refuses_a_missing_file(color_checkpoint, tmp_path):
    classifier = load_tested(ModelConfig(path=str(color_checkpoint), device="cpu"), max_batch=4)
    assert len(classifier.predict(frames()[:4])) == 4
    with pytest.raises(SightdError):
        load_tested(ModelConfig(path=str(tmp_path / "missing.safetensors"), device="cpu"))
