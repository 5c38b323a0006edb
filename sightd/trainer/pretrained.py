"""`train.init`: start resnet18/34/50 from torchvision's ImageNet weights instead of noise.

torchvision names its layers conv1, bn1, layerN.M..., downsample; sightd's ResNet names them
stem, stages, shortcut, so the state dict is renamed key by key. The ImageNet head (1000
classes) is dropped: the model keeps its own head for the data set's classes.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from sightd.errors import SightdError
from sightd.model import ResNet

PRETRAINED_ARCHS = ("resnet18", "resnet34", "resnet50")
TORCHVISION = "torchvision"  # the value of init that asks torchvision for its own weights


def load_init(model: ResNet, arch: str, init: str) -> int:
    """Copy ImageNet weights into `model` (all but the head); returns how many tensors."""
    if arch not in PRETRAINED_ARCHS:
        raise SightdError(
            f"--init needs arch {', '.join(PRETRAINED_ARCHS)} (ImageNet weights exist for "
            f"those); {arch!r} has none: drop --init or pick one of them with --arch"
        )
    state = _torchvision_weights(arch) if init == TORCHVISION else _read_state_dict(Path(init))
    renamed = {sightd_name(key): value for key, value in state.items()}
    renamed = {key: value for key, value in renamed.items() if not key.startswith("fc.")}
    own = model.state_dict()
    wrong = [k for k, v in renamed.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in renamed and not k.startswith("fc.")]
    if wrong or missing:
        example = (wrong or missing)[0]
        raise SightdError(
            f"--init {init}: these are not {arch} weights ({len(wrong)} tensors that do not fit, "
            f"{len(missing)} missing, e.g. {example}); use the state dict of torchvision's {arch}"
        )
    model.load_state_dict(renamed, strict=False)
    return len(renamed)


def sightd_name(key: str) -> str:
    """A torchvision ResNet state-dict key -> the same tensor's key in sightd's ResNet."""
    key = re.sub(r"^conv1\.", "stem.0.", key)
    key = re.sub(r"^bn1\.", "stem.1.", key)
    key = re.sub(r"^layer(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.", key)
    return key.replace(".downsample.", ".shortcut.")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SightdError(
            f"--init {path}: no such file; give a torchvision state dict (.pth) or 'torchvision'"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as exc:  # pickle, zip and safety errors all mean "not a plain state dict"
        raise SightdError(
            f"--init {path}: cannot be read as a state dict of tensors ({type(exc).__name__})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # some tools wrap it
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SightdError(f"--init {path}: expected a state dict (names -> tensors)")
    return state


def _torchvision_weights(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's own DEFAULT ImageNet weights: its cache, else a download (needs network)."""
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # no network, a proxy, a full disk: say what to do instead
        raise SightdError(
            f"--init torchvision: could not get {weights} ({exc.__class__.__name__}: {exc}); "
            "download the .pth file elsewhere and give its path to --init"
        ) from None
