"""The torch engine: the checkpoint's own network in PyTorch eager, prepared for inference.

The network is prepared once without changing what it computes: batch norm is folded into the
convolutions (by the model module, which knows its own structure; tracing the network would
disturb the forward passes of other threads, so a hot reload would cost the live worker
frames), tensors are channels_last, and where the hardware does bfloat16 natively (precision
"auto") the weights are bfloat16. Each makes a forward pass cheaper (README: the live
pipeline's figures). It serves on CUDA and Apple's MPS as well as the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sightd.checkpoint import Checkpoint, ModelInfo, load_checkpoint
from sightd.devices import has_fast_bf16, resolve_device
from sightd.model import fold_batch_norm


class TorchEngine:
    name = "torch"

    def __init__(self, checkpoint: Checkpoint, device: torch.device, precision: str = "auto"):
        self.torch_device = device
        self.device = str(device)
        self.dtype = inference_dtype(device, precision)
        self.model = prepare_for_inference(checkpoint.model, device, self.dtype)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Normalised float NCHW tensor (on any device) -> float32 logits on the device."""
        x = batch.to(self.torch_device, self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model(x).float()

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.forward(torch.from_numpy(batch)).cpu().numpy()


def load(
    path: Path, device: str = "auto", precision: str = "auto", threads: int = 0
) -> tuple[ModelInfo, str, TorchEngine]:
    """The engine contract's loader (sightd.engines.base.load_engine)."""
    if threads > 0:  # process-wide; the worker's own setting, so a reload sets it alike
        torch.set_num_threads(threads)
    torch_device = resolve_device(device)
    checkpoint = load_checkpoint(path, torch_device)
    return checkpoint.info, checkpoint.digest, TorchEngine(checkpoint, torch_device, precision)


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
