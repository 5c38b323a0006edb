"""The one preprocessing path, shared by training and the live worker.

BGR uint8 frame -> (camera roi) -> centre square -> resize to image size -> RGB -> normalise
(mean/std) -> CHW float tensor. The aspect-ratio policy is one for training and serving: the
largest centred square is kept and the rest cut off, so nothing is ever squashed and a square
photo and a 4:3 camera frame show an object with the same shape.

It is split in two steps so the trainer can cache the uint8 result of the first (decode and
resize each file once) and run the second in batches on the device. Normalising is written
twice, in numpy (`preprocess_numpy`, which serves the live worker whatever its engine, and which
`preprocess` wraps) and in torch (`normalize`, for the trainer's batches already on the
device), with the same float32 operations in the same order; tests hold them together. Only the
torch functions import torch, so a worker serving through ONNX Runtime or OpenVINO never loads it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

DEFAULT_IMAGE_SIZE = 64  # the seed's input size
DEFAULT_MEAN = (0.5, 0.5, 0.5)  # the seed's normalisation: maps [0, 1] to [-1, 1]
DEFAULT_STD = (0.5, 0.5, 0.5)


def crop_roi(frame: np.ndarray, roi: Sequence[float] | None) -> np.ndarray:
    """The camera's region of interest ([x, y, width, height], fractions of the frame): a view,
    not a copy. At least one pixel each way, so a tiny region of a small frame stays valid."""
    if roi is None:
        return frame
    height, width = frame.shape[:2]
    x, y, w, h = roi
    left, top = min(int(round(x * width)), width - 1), min(int(round(y * height)), height - 1)
    right = max(left + 1, min(width, int(round((x + w) * width))))
    bottom = max(top + 1, min(height, int(round((y + h) * height))))
    return frame[top:bottom, left:right]


def roi_min_side(size: int, roi: Sequence[float] | None) -> int:
    """How large a frame's shorter side must be decoded for its roi to still cover `size`."""
    if roi is None:
        return size
    return int(np.ceil(size / min(roi[2], roi[3])))


def centre_square(frame: np.ndarray) -> np.ndarray:
    """The largest centred square of a frame (a view): the one aspect-ratio policy."""
    height, width = frame.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return frame[top : top + side, left : left + side]


def resize_rgb(frame_bgr: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """One BGR uint8 HxWx3 frame -> its centre square as RGB uint8 size x size x 3 (written
    into `out` when given, e.g. a batch's slot)."""
    frame_bgr = centre_square(frame_bgr)
    height, width = frame_bgr.shape[:2]
    # INTER_AREA averages when shrinking (like PIL's antialiased resize in the seed).
    shrinking = height > size or width > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    # Resize first: the channel swap commutes with resizing, and is cheaper on 64x64 pixels.
    small = cv2.resize(frame_bgr, (size, size), interpolation=interpolation)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=out)


def normalize_numpy(
    batch_rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """uint8 NHWC RGB -> float32 NCHW (contiguous), (x / 255 - mean) / std."""
    x = np.empty((batch_rgb.shape[0], 3, *batch_rgb.shape[1:3]), np.float32)
    np.copyto(x, batch_rgb.transpose(0, 3, 1, 2))  # one pass: the cast and the transpose
    mean_c, std_c = _channel_constants(tuple(mean), tuple(std))
    x /= np.float32(255.0)
    x -= mean_c
    x /= std_c
    return x


@functools.lru_cache(maxsize=8)
def _channel_constants(mean: tuple, std: tuple) -> tuple[np.ndarray, np.ndarray]:
    """mean and std as float32 1x3x1x1, made once per model rather than once per frame."""
    return tuple(np.asarray(v, np.float32).reshape(1, -1, 1, 1) for v in (mean, std))


def normalize(batch_rgb: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 NHWC RGB (on any device) -> float NCHW, (x / 255 - mean) / std: normalize_numpy's
    arithmetic on a torch tensor, for batches that are already on the device."""
    import torch

    x = batch_rgb.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def preprocess_numpy(
    frames_bgr: np.ndarray | Sequence[np.ndarray],
    size: int = DEFAULT_IMAGE_SIZE,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> np.ndarray:
    """One frame (HxWx3) or many -> float32 NCHW numpy array: what every engine is fed."""
    if isinstance(frames_bgr, np.ndarray) and frames_bgr.ndim == 3:
        frames_bgr = [frames_bgr]
    batch = np.empty((len(frames_bgr), size, size, 3), np.uint8)
    for slot, frame in zip(batch, frames_bgr, strict=True):  # each resized into its slot
        resize_rgb(frame, size, out=slot)
    return normalize_numpy(batch, mean, std)


def preprocess(
    frames_bgr: np.ndarray | Sequence[np.ndarray],
    size: int = DEFAULT_IMAGE_SIZE,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One frame (HxWx3) or many -> float NCHW tensor on `device` (preprocess_numpy's)."""
    import torch

    return torch.from_numpy(preprocess_numpy(frames_bgr, size, mean, std)).to(device)
