"""The ONNX Runtime engine: the checkpoint's ONNX export (float32), on the CPU or CUDA.

One session per model, sequential, with `threads` intra-op threads that sleep when idle (no
spinning: at 2 fps a spinning pool would burn a core between frames). CUDA is used where asked
for (model.device cuda, or auto) and onnxruntime-gpu provides it; elsewhere the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime

from sightd.engines.base import StaleEngineFile, check_digest
from sightd.errors import SightdError
from sightd.export import METADATA_KEY

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, session: onnxruntime.InferenceSession):
        self.session = session
        self.device = "cuda" if session.get_providers()[0] == CUDA else "cpu"

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"input": batch})[0]


def open_engine(
    path: Path, digest: str, device: str = "auto", precision: str = "auto", threads: int = 0
) -> OnnxRuntimeEngine:
    """The engine contract's opener (sightd.engines.base.load_engine): refuses a stale file."""
    if precision == "bfloat16":
        raise SightdError("engine onnxruntime serves float32; set model.precision auto or float32")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads  # 0: one per core
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers(device))
    except Exception as exc:  # onnxruntime's own exception types: a damaged or foreign file
        raise StaleEngineFile(f"{path} cannot be loaded by onnxruntime: {str(exc)[:200]}") from None
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    check_digest(path, json.loads(raw) if raw else None, digest)
    return OnnxRuntimeEngine(session)


def providers(device: str) -> list[str]:
    available = onnxruntime.get_available_providers()
    if device == "cuda" and CUDA not in available:
        raise SightdError(
            "device 'cuda' is not available to onnxruntime (it needs the onnxruntime-gpu "
            "package); use model.device auto or cpu, or model.engine torch"
        )
    if device == "mps":
        raise SightdError("engine onnxruntime has no MPS device; use model.engine torch")
    if device in ("cuda", "auto") and CUDA in available:
        return [CUDA, CPU]
    return [CPU]
