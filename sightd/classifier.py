"""A loaded checkpoint ready to label frames: preprocess, forward, softmax, as fast as it goes.

The network is prepared once for inference without changing what it computes: batch norm is
folded into the convolutions (by the model module, which knows its own structure; tracing the
network would disturb the forward passes of other threads, so a hot reload would cost the
live worker frames), tensors are channels_last, and where the hardware does bfloat16 natively
(precision "auto") the weights are bfloat16. Each makes a forward pass cheaper (README: the
live pipeline's figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sightd.checkpoint import Checkpoint, load_checkpoint
from sightd.devices import has_fast_bf16, resolve_device
from sightd.model import fold_batch_norm
from sightd.preprocessing import preprocess


@dataclass
class Prediction:
    label: str
    confidence: float
    scores: dict[str, float]


class Classifier:
    """Wraps a checkpoint; `predict` takes BGR uint8 frames, as cameras and cv2 give them."""

    def __init__(self, checkpoint: Checkpoint, device: torch.device, precision: str = "auto"):
        self.checkpoint = checkpoint
        self.info = checkpoint.info
        self.device = device
        self.dtype = inference_dtype(device, precision)
        self.model = prepare_for_inference(checkpoint.model, device, self.dtype)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", precision: str = "auto") -> Classifier:
        torch_device = resolve_device(device)
        return cls(load_checkpoint(path, torch_device), torch_device, precision)

    @property
    def name(self) -> str:
        return f"{self.info.arch}@{self.checkpoint.digest}"

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalised float NCHW batch (as preprocess gives it) -> float32 logits."""
        x = batch.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model(x).float()

    @torch.inference_mode()
    def calibrated(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalised batch -> calibrated probabilities (the checkpoint's temperature)."""
        return torch.softmax(self.forward(batch) / self.info.temperature, dim=1)

    @torch.inference_mode()
    def probabilities(self, frames_bgr: list[np.ndarray]) -> np.ndarray:
        """N frames -> N x classes calibrated probabilities (float32 numpy)."""
        batch = preprocess(
            frames_bgr, self.info.image_size, self.info.mean, self.info.std, self.device
        )
        return self.calibrated(batch).cpu().numpy()

    def predict(self, frames_bgr: list[np.ndarray]) -> list[Prediction]:
        classes = self.info.classes
        out = []
        for row in self.probabilities(frames_bgr):
            best = int(row.argmax())
            scores = {name: float(p) for name, p in zip(classes, row, strict=True)}
            out.append(Prediction(classes[best], float(row[best]), scores))
        return out


def inference_dtype(device: torch.device, precision: str) -> torch.dtype:
    """bfloat16 when asked for, or for "auto" where the device does it natively; else float32.

    The trainer validates and tests in bfloat16 on the same hardware, so "auto" serves the model
    as it was measured. Probabilities move by about 1e-3; "float32" gives the exact ones.
    """
    if precision == "bfloat16" or (precision == "auto" and has_fast_bf16(device)):
        return torch.bfloat16
    return torch.float32


def prepare_for_inference(model: torch.nn.Module, device: torch.device, dtype: torch.dtype):
    """The network itself (changed in place), in eval mode with batch norm folded into the
    convolutions, in channels_last layout and `dtype`, on `device`."""
    return fold_batch_norm(model.eval()).to(device, dtype, memory_format=torch.channels_last)
