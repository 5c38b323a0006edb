"""The engine contract, the rule `model.engine: auto` follows, and loading one for a checkpoint.

An engine takes a normalised float32 NCHW numpy batch (as sightd.preprocessing.preprocess_numpy
gives it) and returns float32 logits as numpy, before the temperature:

    class Engine(Protocol):
        name: str      # "torch", "onnxruntime", "openvino"
        device: str    # where it runs, as the worker's status reports it ("cpu", "cuda:0")
        def run(self, batch: np.ndarray) -> np.ndarray: ...

The safetensors checkpoint stays the one source of truth. An ONNX Runtime or OpenVINO engine
serves an export of it (engine_files.py) whose embedded `source_digest` must be the
checkpoint's own digest; a stale or foreign export is never served. Nothing here imports torch:
only the torch engine does, so a worker with any other engine never loads it.
"""

from __future__ import annotations

import importlib.util
import logging
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from sightd.checkpoint import ModelInfo, read_info
from sightd.errors import SightdError

log = logging.getLogger("sightd.engines")

ENGINES = ("torch", "onnxruntime", "openvino")
ENGINE_CHOICES = ("auto", *ENGINES)
EXPORT_FORMAT = {"onnxruntime": "onnx", "openvino": "openvino"}  # what each serves
MODULES = {  # module (and the package it needs)
    "torch": ("sightd.engines.torch_engine", "torch"),
    "onnxruntime": ("sightd.engines.onnxruntime_engine", "onnxruntime"),
    "openvino": ("sightd.engines.openvino_engine", "openvino"),
}
EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}  # pip install 'sightd[EXTRA]'
CPU_PREFERENCE = ("openvino", "onnxruntime", "torch")  # fastest first (README: Engines)


class Engine(Protocol):
    name: str
    device: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


class StaleEngineFile(SightdError):
    """An export not to serve for this checkpoint: made from another one, carrying no digest,
    or one its runtime cannot read (damaged, half-copied). It is made again from the
    checkpoint; only a new export that fails too is an error."""


def installed(engine: str) -> bool:
    """The engine's package can be imported (found without importing it)."""
    return importlib.util.find_spec(MODULES[engine][1]) is not None


def not_installed(engine: str) -> str | None:
    """What to do when `engine`'s package is missing; None when it is installed."""
    if installed(engine):
        return None
    extra = f"pip install 'sightd[{EXTRAS[engine]}]'" if engine in EXTRAS else "install it"
    return f"engine {engine!r} is not installed; {extra} or set model.engine: auto"


def gpu_visible() -> bool:
    """An NVIDIA driver with a GPU, or Apple silicon (MPS): told without importing torch."""
    nvidia = Path("/proc/driver/nvidia/gpus")
    if nvidia.is_dir() and any(nvidia.iterdir()):
        return True
    return sys.platform == "darwin" and platform.machine() == "arm64"


def choose_engine(engine: str, device: str) -> str:
    """`auto`: torch on a GPU (asked for, or for device auto a GPU is visible); on the CPU the
    first installed of openvino, onnxruntime, torch. Any other name is taken as it is."""
    if engine != "auto":
        return engine
    if device in ("cuda", "mps") or (device == "auto" and gpu_visible()):
        return "torch"
    return next(name for name in CPU_PREFERENCE if name == "torch" or installed(name))


def load_engine(
    checkpoint: Path,
    engine: str,
    device: str = "auto",
    precision: str = "auto",
    threads: int = 0,
    progress: Callable[[], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> tuple[ModelInfo, str, Engine]:
    """(what the checkpoint says, its digest, an engine serving it). `threads` 0: the engine's
    default. An export that is missing or stale is made first (`progress` is called about once
    a second meanwhile, `cancelled` ends it early); any defect is a one-line SightdError."""
    engine = choose_engine(engine, device)
    if engine not in ENGINES:
        raise SightdError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINE_CHOICES)}")
    missing = not_installed(engine)
    if missing:
        raise SightdError(missing)
    module = importlib.import_module(MODULES[engine][0])
    if engine == "torch":
        return module.load(checkpoint, device, precision, threads)
    from sightd.engines.engine_files import engine_file, make_engine_file

    info, digest = read_info(checkpoint)
    fmt = EXPORT_FORMAT[engine]

    def open_checked(path: Path) -> Engine:
        return module.open_engine(path, digest, device, precision, threads)

    for path in engine_file(checkpoint, fmt, digest):
        try:
            return info, digest, open_checked(path)
        except StaleEngineFile as exc:
            log.info("%s; making it again", exc)
    made = make_engine_file(checkpoint, fmt, digest, progress, cancelled)
    return info, digest, open_checked(made)


def check_digest(path: Path, metadata: dict | None, digest: str) -> None:
    """Raise StaleEngineFile unless the export's metadata names the checkpoint's digest."""
    source = (metadata or {}).get("source_digest")
    if source is None:
        raise StaleEngineFile(f"{path} carries no sightd metadata (not made by `sightd export`)")
    if source != digest:
        raise StaleEngineFile(f"{path} was made from checkpoint {source}, not {digest}")
