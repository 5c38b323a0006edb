"""A loaded checkpoint ready to label frames: preprocess, forward, softmax."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sightd.checkpoint import Checkpoint, load_checkpoint
from sightd.devices import resolve_device
from sightd.preprocessing import preprocess


@dataclass
class Prediction:
    label: str
    confidence: float
    scores: dict[str, float]


class Classifier:
    """Wraps a checkpoint; `predict` takes BGR uint8 frames, as cameras and cv2 give them."""

    def __init__(self, checkpoint: Checkpoint, device: torch.device):
        self.checkpoint = checkpoint
        self.info = checkpoint.info
        self.device = device
        self.model = checkpoint.model.to(device).eval()
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Classifier:
        torch_device = resolve_device(device)
        return cls(load_checkpoint(path, torch_device), torch_device)

    @property
    def name(self) -> str:
        return f"{self.info.arch}@{self.checkpoint.digest}"

    @torch.inference_mode()
    def probabilities(self, frames_bgr: list[np.ndarray]) -> np.ndarray:
        """N frames -> N x classes probabilities (float32 numpy)."""
        batch = preprocess(
            frames_bgr, self.info.image_size, self.info.mean, self.info.std, self.device
        )
        return torch.softmax(self.model(batch), dim=1).float().cpu().numpy()

    def predict(self, frames_bgr: list[np.ndarray]) -> list[Prediction]:
        classes = self.info.classes
        out = []
        for row in self.probabilities(frames_bgr):
            best = int(row.argmax())
            scores = {name: float(p) for name, p in zip(classes, row, strict=True)}
            out.append(Prediction(classes[best], float(row[best]), scores))
        return out
