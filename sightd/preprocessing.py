"""The one preprocessing path, shared by training and the live worker.

BGR uint8 frame -> RGB -> resize to image size -> normalise (mean/std) -> CHW float tensor.
It is split in two steps so the trainer can cache the uint8 result of the first (decode and
resize each file once) and run the second in batches on the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

DEFAULT_IMAGE_SIZE = 64  # the seed's input size
DEFAULT_MEAN = (0.5, 0.5, 0.5)  # the seed's normalisation: maps [0, 1] to [-1, 1]
DEFAULT_STD = (0.5, 0.5, 0.5)


def resize_rgb(frame_bgr: np.ndarray, size: int) -> np.ndarray:
    """One BGR uint8 HxWx3 frame -> RGB uint8 size x size x 3."""
    height, width = frame_bgr.shape[:2]
    # INTER_AREA averages when shrinking (like PIL's antialiased resize in the seed).
    shrinking = height > size or width > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    # Resize first: the channel swap commutes with resizing, and is cheaper on 64x64 pixels.
    small = cv2.resize(frame_bgr, (size, size), interpolation=interpolation)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def normalize(batch_rgb: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 NHWC RGB (on any device) -> float NCHW, (x / 255 - mean) / std."""
    x = batch_rgb.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def preprocess(
    frames_bgr: np.ndarray | Sequence[np.ndarray],
    size: int = DEFAULT_IMAGE_SIZE,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One frame (HxWx3) or many -> float NCHW tensor on `device`."""
    if isinstance(frames_bgr, np.ndarray) and frames_bgr.ndim == 3:
        frames_bgr = [frames_bgr]
    batch = np.stack([resize_rgb(frame, size) for frame in frames_bgr])
    return normalize(torch.from_numpy(batch).to(device), mean, std)
