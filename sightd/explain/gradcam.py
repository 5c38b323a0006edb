"""Grad-CAM of a checkpoint's prediction, on the network's own eager copy.

Explanations never run on the serving copy: sightd.classifier folds batch norm into the
convolutions, may run in bfloat16 and channels_last, and runs under inference_mode, which
keeps no graph to take gradients through. The Explainer loads the checkpoint file again as
the eager float32 network in eval mode, with gradients, and keeps it to itself.

The maps come from the grad-cam package (pytorch-grad-cam, the `explain` extra), at the last
residual stage: its output is the last spatial map before global pooling, 1/8 of the input
for `seed` and 1/32 for the resnets. Since that stage feeds only the pooling and the linear
head, Grad-CAM there is the class activation map of Zhou et al. (2016): each position's
features weighted by the head's weights for the class, negative evidence cut at zero.

The network sees the centre square of an image (sightd.preprocessing, as in serving), so the
map covers that square and is drawn over it: for a camera frame, the centre square of its roi.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from sightd.checkpoint import load_checkpoint
from sightd.devices import resolve_device
from sightd.errors import SightdError
from sightd.preprocessing import centre_square, normalize, preprocess

MAX_SIDE = 640  # overlays are shrunk to this: a phone photo's 3000 px square is 20 MB of PNG
HEAT_WEIGHT = 0.45  # the heat colours' share of an overlay; the picture stays recognisable
INSTALL_HINT = "Grad-CAM needs the grad-cam package: pip install 'sightd[explain]'"


def available() -> bool:
    """Whether the grad-cam package is installed (without importing it: it loads pyplot)."""
    return importlib.util.find_spec("pytorch_grad_cam") is not None


@dataclass
class Explanation:
    label: str  # the class explained: the top class unless another was asked for
    confidence: float  # its calibrated probability (the checkpoint's temperature)
    scores: dict[str, float]  # every class's calibrated probability
    heatmap: np.ndarray  # float32 H x W in [0, 1] over the shown image; 1 = strongest evidence
    overlay_bgr: np.ndarray  # uint8 H x W x 3: the shown image with the heat map over it


class Explainer:
    """Grad-CAM of one checkpoint; one explanation at a time (a lock), from any thread.

    threads: torch's CPU threads while explaining (0: leave torch's setting). The console
    passes model.threads, as the worker runs: two threads on two cores the pipeline also uses
    spend several times the CPU of one waiting for each other (README: Explain).
    """

    def __init__(self, model_path: str | Path, device: str = "cpu", threads: int = 0):
        if not available():
            raise SightdError(INSTALL_HINT)
        from pytorch_grad_cam import GradCAM

        self.device = resolve_device(device)
        checkpoint = load_checkpoint(model_path, self.device)
        self.info, self.digest = checkpoint.info, checkpoint.digest
        self.model = checkpoint.model.float().eval()
        self._cam = GradCAM(model=self.model, target_layers=[self.model.stages[-1]])
        self._lock = threading.Lock()
        self.threads = threads

    def explain(
        self,
        image_bgr: np.ndarray,
        target: int | None = None,
        network_image: np.ndarray | None = None,
    ) -> Explanation:
        """The heat map of class `target` (default: the top class) over image_bgr's centre
        square, shrunk to MAX_SIDE at most.

        network_image: the same view at another resolution to feed the network instead, as
        serving decodes it (a JPEG at reduced scale), so the confidence is the one it reports.
        """
        info = self.info
        fed = image_bgr if network_image is None else network_image
        batch = preprocess(fed, info.image_size, info.mean, info.std, self.device)
        maps, probabilities = self.heatmaps(batch, None if target is None else [target])
        row = probabilities[0]
        index = int(row.argmax()) if target is None else target
        shown = shown_image(image_bgr)
        heatmap = fit(maps[0], shown.shape[:2])
        return Explanation(
            label=info.classes[index],
            confidence=float(row[index]),
            scores={name: float(p) for name, p in zip(info.classes, row, strict=True)},
            heatmap=heatmap,
            overlay_bgr=overlay(shown, heatmap),
        )

    def heatmaps(
        self, batch: torch.Tensor, targets: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """A normalised NCHW batch -> (N x size x size float32 maps in [0, 1], each of its
        class in targets or else its top class; N x classes calibrated probabilities)."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        wanted = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
        # enable_grad: a caller may be under no_grad; the backward pass needs the graph
        with self._lock, torch.enable_grad(), cpu_threads(self.threads):
            maps = self._cam(input_tensor=batch.to(self.device, torch.float32), targets=wanted)
            logits = self._cam.outputs.detach().float()
        probabilities = torch.softmax(logits / self.info.temperature, dim=1)
        return maps.astype(np.float32), probabilities.cpu().numpy()

    def overlays_rgb(self, images_rgb: torch.Tensor, targets: Sequence[int]) -> list[np.ndarray]:
        """uint8 N x size x size x 3 RGB images, as the trainer and eval hold them -> each
        with the heat map of its class in targets over it, at the same size."""
        info = self.info
        maps, _ = self.heatmaps(normalize(images_rgb, info.mean, info.std), targets)
        return [
            overlay(image, heatmap, rgb=True)
            for image, heatmap in zip(images_rgb.numpy(), maps, strict=True)
        ]


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """torch's CPU threads set to `threads` (0: unchanged) for the block, in the calling thread
    (where a CPU backward pass runs too), and put back after it."""
    if threads <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def encode_png(image_bgr: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image_bgr)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def shown_image(image_bgr: np.ndarray) -> np.ndarray:
    """What an explanation is drawn over: the image's centre square, at most MAX_SIDE."""
    square = centre_square(image_bgr)
    if square.shape[0] <= MAX_SIDE:
        return np.ascontiguousarray(square)
    return cv2.resize(square, (MAX_SIDE, MAX_SIDE), interpolation=cv2.INTER_AREA)


def fit(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The map resized (bilinear) to shape, kept in [0, 1]."""
    if heatmap.shape == shape:
        return heatmap
    resized = cv2.resize(heatmap, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(resized, 0.0, 1.0)


def overlay(image: np.ndarray, heatmap: np.ndarray, rgb: bool = False) -> np.ndarray:
    """The image (BGR, or RGB with rgb=True) under the heat map in the jet colours: blue where
    the class found nothing, red where it found the most."""
    colours = cv2.applyColorMap(np.uint8(np.round(255 * heatmap)), cv2.COLORMAP_JET)
    if rgb:
        colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1 - HEAT_WEIGHT, colours, HEAT_WEIGHT, 0)
