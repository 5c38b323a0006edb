"""Self-describing checkpoints: safetensors weights plus everything needed to rebuild them.

The header metadata stores arch, class names and preprocessing, so one file is enough to
rebuild the classifier. Loading never unpickles anything (safetensors holds only tensors).
`read_info` checks a file and reads what it says about itself without building the network:
it imports no torch, for a worker that serves an exported engine file made from it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sightd import __version__
from sightd.atomic import atomic_write_bytes
from sightd.errors import SightdError

if TYPE_CHECKING:
    import torch

    from sightd.model import ResNet

FORMAT = "sightd-checkpoint"
FORMAT_VERSION = "1"


@dataclass
class ModelInfo:
    """What a checkpoint says about itself."""

    arch: str
    classes: list[str]
    image_size: int
    mean: list[float]
    std: list[float]
    test_accuracy: float | None = None
    created_at: float = field(default_factory=time.time)
    sightd_version: str = __version__
    # Calibration: probabilities are softmax(logits / temperature), fitted on the validation
    # split so that a confidence of 0.8 is right about 80% of the time. 1.0 = uncalibrated.
    temperature: float = 1.0

    def to_metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": self.arch,
            "classes": json.dumps(self.classes),
            "image_size": str(self.image_size),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "test_accuracy": json.dumps(self.test_accuracy),
            "created_at": repr(self.created_at),
            "sightd_version": self.sightd_version,
            "temperature": repr(self.temperature),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ModelInfo:
        return cls(
            arch=meta["arch"],
            classes=list(json.loads(meta["classes"])),
            image_size=int(meta["image_size"]),
            mean=[float(v) for v in json.loads(meta["mean"])],
            std=[float(v) for v in json.loads(meta["std"])],
            test_accuracy=json.loads(meta.get("test_accuracy", "null")),
            created_at=float(meta.get("created_at", "0")),
            sightd_version=meta.get("sightd_version", "unknown"),
            temperature=_positive(float(meta.get("temperature", "1.0")), "temperature"),
        )


def _positive(value: float, name: str) -> float:
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive number, not {value}")
    return value


@dataclass
class Checkpoint:
    model: ResNet
    info: ModelInfo
    digest: str  # short sha256 of the file: names this exact set of weights in label messages


def save_checkpoint(path: str | Path, model: ResNet, info: ModelInfo) -> None:
    """Write weights + metadata atomically: a crash never leaves a half-written file."""
    from safetensors.torch import save as save_tensors

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save_tensors(tensors, metadata=info.to_metadata()))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Rebuild the model from the file alone; any defect is a one-line SightdError."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    from sightd.model import create_model

    path = Path(path)
    data = _read_file(path)
    info = _read_info(path, data)
    try:
        tensors = load_tensors(data)
    except SafetensorError as exc:
        raise SightdError(f"model file {path} has a damaged sightd header ({exc})") from None
    model = create_model(info.arch, len(info.classes))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError:
        raise SightdError(
            f"model file {path}: its tensors do not match arch {info.arch!r} with "
            f"{len(info.classes)} classes; retrain or check the file"
        ) from None
    model.to(device).eval()
    return Checkpoint(model, info, file_digest(data))


def read_info(path: str | Path) -> tuple[ModelInfo, str]:
    """What the file says about itself and its digest, checked as load_checkpoint checks the
    header and the extent of the tensor data; the tensors themselves are not read."""
    path = Path(path)
    data = _read_file(path)
    return _read_info(path, data), file_digest(data)


def file_digest(data: bytes) -> str:
    """The short sha256 of a checkpoint's bytes: names this exact set of weights everywhere."""
    return hashlib.sha256(data).hexdigest()[:12]


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        hint = "train one with `sightd train`"
        raise SightdError(f"model file {path} does not exist; {hint}") from None
    except OSError as exc:
        raise SightdError(f"model file {path} cannot be read: {exc.strerror}") from None


def _read_info(path: Path, data: bytes) -> ModelInfo:
    try:
        return ModelInfo.from_metadata(_read_metadata(path, data))
    except (KeyError, ValueError, TypeError) as exc:
        raise SightdError(f"model file {path} has a damaged sightd header ({exc})") from None


def _read_metadata(path: Path, data: bytes) -> dict[str, str]:
    # The safetensors header is an 8-byte length then JSON; parse it ourselves for clear errors.
    hint = "it is not a sightd checkpoint (expected a .safetensors file from `sightd train`)"
    if len(data) < 8:
        raise SightdError(f"model file {path} is empty or truncated; {hint}")
    size = int.from_bytes(data[:8], "little")
    if size <= 0 or 8 + size > len(data):
        raise SightdError(f"model file {path} is truncated or {hint}")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SightdError(f"model file {path}: {hint}") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SightdError(f"model file {path}: {hint}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise SightdError(
            f"model file {path} has checkpoint format {meta.get('format_version')!r}; "
            f"this sightd reads {FORMAT_VERSION!r}: retrain or upgrade sightd"
        )
    _check_extent(path, header, len(data) - 8 - size)
    return meta


def _check_extent(path: Path, header: dict, available: int) -> None:
    """The tensors' byte ranges end where the file does: a truncated copy or appended bytes
    are refused here, before any engine is built from the file."""
    entries = [entry for name, entry in header.items() if name != "__metadata__"]
    try:
        ends = [int(entry["data_offsets"][1]) for entry in entries]
    except (TypeError, KeyError, IndexError, ValueError):
        raise SightdError(f"model file {path} has a damaged sightd header (offsets)") from None
    needed = max(ends, default=0)
    if needed != available:
        raise SightdError(
            f"model file {path} is truncated or damaged: its tensors take {needed} bytes, "
            f"the file holds {available}; copy it again or retrain"
        )
