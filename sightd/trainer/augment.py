"""Training-time augmentation of uint8 image batches, on whatever device the batch lives.

No flips: gestures and digits change meaning when mirrored (a 2 is not a mirrored 5, a thumb
pointing left is not one pointing right). Small shifts, zooms and rotations stand in for the
camera being placed a little differently; brightness and contrast jitter for the light.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

# Images in a group share one draw of random parameters. One draw per image costs a Python
# call each (~25 ms per batch of 64 on a 2-core CPU); groups of 8 cost ~5 ms and still give
# every image new parameters every epoch.
GROUP_SIZE = 8


class Augment:
    """Random affine + colour jitter for uint8 NHWC RGB batches; returns the same layout."""

    def __init__(self) -> None:
        self.transform = v2.Compose(
            [
                v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
                v2.ColorJitter(brightness=0.2, contrast=0.2),
            ]
        )

    def __call__(self, batch_nhwc: torch.Tensor) -> torch.Tensor:
        nchw = batch_nhwc.permute(0, 3, 1, 2)  # torchvision wants channels first
        groups = [self.transform(group) for group in nchw.split(GROUP_SIZE)]
        return torch.cat(groups).permute(0, 2, 3, 1)
