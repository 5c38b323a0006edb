"""A checkpoint ready to label frames: preprocess, run the engine, calibrate, as fast as it goes.

Whatever the engine (sightd/engines: torch, ONNX Runtime, OpenVINO), the frames are prepared by
the one preprocessing (in numpy) and the logits calibrated here, in numpy, so every engine
gives its probabilities the same way and this module never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sightd.checkpoint import ModelInfo
from sightd.engines.base import Engine, load_engine
from sightd.preprocessing import preprocess_numpy


@dataclass
class Prediction:
    label: str
    confidence: float
    scores: dict[str, float]


class Classifier:
    """A checkpoint served by an engine; `predict` takes BGR uint8 frames, as cameras and cv2
    give them."""

    def __init__(self, info: ModelInfo, digest: str, engine: Engine):
        self.info, self.digest, self.engine = info, digest, engine

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str = "auto",
        precision: str = "auto",
        engine: str = "torch",
        threads: int = 0,
        progress: Callable[[], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Classifier:
        """`engine` as model.engine takes it (auto, torch, onnxruntime, openvino); `threads` 0
        leaves the engine's default; `progress` and `cancelled`: while an export is made."""
        info, digest, served = load_engine(
            Path(path), engine, device, precision, threads, progress, cancelled
        )
        return cls(info, digest, served)

    @property
    def name(self) -> str:
        return f"{self.info.arch}@{self.digest}"

    @property
    def device(self) -> str:
        return f"{self.engine.name} on {self.engine.device}"

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Normalised float32 NCHW batch (as preprocess_numpy gives it) -> float32 logits."""
        return self.engine.run(np.ascontiguousarray(batch, dtype=np.float32))

    def calibrated(self, batch: np.ndarray) -> np.ndarray:
        """Normalised batch -> calibrated probabilities (the checkpoint's temperature)."""
        return calibrate(self.logits(batch), self.info.temperature)

    def probabilities(self, frames_bgr: list[np.ndarray]) -> np.ndarray:
        """N frames -> N x classes calibrated probabilities (float32)."""
        info = self.info
        return self.calibrated(preprocess_numpy(frames_bgr, info.image_size, info.mean, info.std))

    def predict(self, frames_bgr: list[np.ndarray]) -> list[Prediction]:
        classes = self.info.classes
        out = []
        for row in self.probabilities(frames_bgr):
            best = int(row.argmax())
            scores = {name: float(p) for name, p in zip(classes, row, strict=True)}
            out.append(Prediction(classes[best], float(row[best]), scores))
        return out


def calibrate(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature) along the classes, in float32."""
    z = np.asarray(logits, np.float32) / np.float32(temperature)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
