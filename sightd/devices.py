"""Pick the torch device (auto means CUDA, else Apple's MPS, else CPU) and what it does fast."""

from __future__ import annotations

import re
from pathlib import Path

from sightd.errors import SightdError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SightdError("device 'cuda' is not available here; use --device auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SightdError("device 'mps' is not available here; use --device auto or cpu")
    if name not in DEVICE_CHOICES:
        raise SightdError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


def has_fast_bf16(device) -> bool:
    """Faster training and inference where the hardware computes in bfloat16: CPUs with
    AVX512-BF16, AMX or Arm's BF16, NVIDIA GPUs from Ampere on. Elsewhere bfloat16 is emulated
    (oneDNN on plain AVX-512, CUDA on older GPUs) and slower than float32, so it stays off."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        try:  # private but long-standing; should it go away, float32 is the safe answer
            supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
        return supported and _cpu_has_bf16_instructions()
    return False


def _cpu_has_bf16_instructions() -> bool:
    """The CPU flags Linux reports (x86: avx512_bf16, amx_bf16; Arm: bf16); elsewhere False."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16|bf16)\b", cpuinfo) is not None
