"""Pick the torch device: auto means CUDA, else Apple's MPS, else CPU."""

from __future__ import annotations

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
