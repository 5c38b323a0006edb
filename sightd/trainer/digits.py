"""scikit-learn's bundled handwritten digits as a folder dataset: real data with no download."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sightd.atomic import atomic_write_bytes

SIZE = 64  # the seed's input size; the originals are 8x8


def write_digits_dataset(out_dir: str | Path) -> Path:
    """Write the 1797 digits as `out_dir/<0..9>/<index>.png`, 64x64 RGB; returns out_dir."""
    from sklearn.datasets import load_digits

    out_dir = Path(out_dir)
    digits = load_digits()
    for index, (image, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        # 0..16 ink levels -> 0..255; bicubic upscaling gives smooth strokes, not 8x8 blocks.
        gray = (image * (255.0 / 16.0)).astype(np.float32)
        big = cv2.resize(gray, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
        rgb = cv2.cvtColor(np.clip(big, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        ok, png = cv2.imencode(".png", rgb)
        if not ok:  # pragma: no cover - cv2 always encodes a small uint8 image
            raise RuntimeError("cv2 could not encode a PNG")
        atomic_write_bytes(out_dir / str(target) / f"{index:04d}.png", png.tobytes())
    return out_dir
