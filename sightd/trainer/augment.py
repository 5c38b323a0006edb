"""Camera-like augmentation of uint8 image batches, per image, on whatever device they live.

A model trained on a few dozen photos must still know them when the camera sits a little
elsewhere, the light changes, the picture is soft or noisy, or a hand covers part of it, so
each image gets its own draw of all of those. No flips unless asked: digits and gestures change
meaning when mirrored (a thumb pointing left is not one pointing right).

Everything is batched tensor maths (one affine grid, one grouped convolution for blur) on the
batch's device: no Python loop over the images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_DEGREES = 12.0  # small rotations: a camera is rarely mounted level to the degree
MAX_SHIFT = 0.12  # of the image side, each way
SCALE = (0.85, 1.15)
BRIGHTNESS = 0.3  # factor 1 +- this
CONTRAST = 0.3
COLOUR_GAIN = 0.06  # per-channel gain, for white balance that drifts
BLUR_PROBABILITY, MAX_BLUR_SIGMA = 0.3, 1.5  # in pixels of the network input
MAX_NOISE = 0.05  # standard deviation, of the full scale
COVER_PROBABILITY, MAX_COVER = 0.25, 0.3  # a rectangle of up to this share of each side


class Augment:
    """uint8 NHWC RGB batch -> augmented uint8 NHWC RGB batch of the same shape."""

    def __init__(self, flip: bool = False):
        self.flip = flip
        self._device = torch.device("cpu")

    def __call__(self, batch_nhwc: torch.Tensor) -> torch.Tensor:
        self._device = batch_nhwc.device  # random draws are made where the batch is
        x = batch_nhwc.permute(0, 3, 1, 2).float().div_(255.0)  # N x 3 x H x W in [0, 1]
        x = self._geometry(x)
        self._light(x)
        self._blur(x)
        self._cover(x)
        self._noise(x)
        out = x.clamp_(0, 1).mul_(255.0).round_().to(torch.uint8)
        return out.permute(0, 2, 3, 1).contiguous()

    def _geometry(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        angle = self._uniform(n, -MAX_DEGREES, MAX_DEGREES) * (math.pi / 180)
        scale = self._uniform(n, *SCALE)
        flip = torch.ones(n, device=x.device)
        if self.flip:
            flip = torch.where(self._uniform(n, 0, 1) < 0.5, -flip, flip)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, self._uniform(n, -2 * MAX_SHIFT, 2 * MAX_SHIFT)], 1),
                torch.stack([sin * flip, cos, self._uniform(n, -2 * MAX_SHIFT, 2 * MAX_SHIFT)], 1),
            ],
            1,
        )  # grid coordinates run -1..1, so a shift of 2 * s is s of the side
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # border: the edge colour goes on past the old border. Reflection would mirror the
        # subject into the margin, and a model taught that sees half a card on an empty desk.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _light(self, x: torch.Tensor) -> None:
        """Contrast about the image's mean, then brightness and a per-channel gain: x * a + b."""
        n = len(x)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast = self._uniform(n, 1 - CONTRAST, 1 + CONTRAST).view(-1, 1, 1, 1)
        brightness = self._uniform(n, 1 - BRIGHTNESS, 1 + BRIGHTNESS).view(-1, 1, 1, 1)
        gain = brightness * (1 + self._uniform(n * 3, -COLOUR_GAIN, COLOUR_GAIN).view(-1, 3, 1, 1))
        x.mul_(contrast * gain).add_(mean * (1 - contrast) * gain)

    def _blur(self, x: torch.Tensor) -> None:
        """A separable Gaussian of its own width on some images: focus, motion, a dirty lens."""
        chosen = self._chosen(len(x), BLUR_PROBABILITY)
        if len(chosen) == 0:
            return
        n, (channels, height, width) = len(chosen), x.shape[1:]
        sigma = self._uniform(n, 0.3, MAX_BLUR_SIGMA).view(-1, 1)
        taps = torch.arange(-2, 3, device=x.device, dtype=x.dtype).view(1, -1)
        kernel = torch.exp(-(taps**2) / (2 * sigma**2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, 0)
        flat = x[chosen].reshape(1, n * channels, height, width)  # grouped: a kernel per image
        flat = F.pad(flat, (2, 2, 2, 2), mode="reflect")
        flat = F.conv2d(flat, kernel.view(-1, 1, 1, 5), groups=n * channels)
        flat = F.conv2d(flat, kernel.view(-1, 1, 5, 1), groups=n * channels)
        x[chosen] = flat.view(n, channels, height, width)

    def _cover(self, x: torch.Tensor) -> None:
        """A plain rectangle over part of some images: a hand, a cup, a passer-by."""
        _, _, height, width = x.shape
        for i in self._chosen(len(x), COVER_PROBABILITY).tolist():
            h, w = (int(self._uniform(1, 0.1, MAX_COVER) * side) + 1 for side in (height, width))
            top, left = (
                int(self._uniform(1, 0, 1) * (side - size))
                for side, size in ((height, h), (width, w))
            )
            x[i, :, top : top + h, left : left + w] = self._uniform(3, 0, 1).view(3, 1, 1)

    def _noise(self, x: torch.Tensor) -> None:
        """Sensor noise of its own strength on half of the images."""
        chosen = self._chosen(len(x), 0.5)
        if len(chosen):
            sigma = self._uniform(len(chosen), 0, MAX_NOISE).view(-1, 1, 1, 1)
            x[chosen] += sigma * torch.randn((len(chosen), *x.shape[1:]), device=x.device)

    def _chosen(self, n: int, probability: float) -> torch.Tensor:
        return torch.nonzero(self._uniform(n, 0, 1) < probability).flatten()

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(n, device=self._device) * (high - low) + low
