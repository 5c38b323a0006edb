"""The OpenVINO engine: the checkpoint's OpenVINO export, compiled for the CPU.

Compiled for latency with one stream and `threads` inference threads, not pinned to cores
(the worker shares them with the captures, and a pinned thread cannot move off a busy one).
precision "auto" leaves OpenVINO's choice: bfloat16 where the CPU does it natively (as the
torch engine does), float32 elsewhere; "float32" asks for float32 everywhere.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import openvino

from sightd.engines.base import StaleEngineFile, check_digest
from sightd.errors import SightdError
from sightd.export import METADATA_KEY

PRECISION = {"float32": "f32", "bfloat16": "bf16"}  # "auto": OpenVINO's own choice


class OpenVinoEngine:
    name = "openvino"

    def __init__(self, compiled: openvino.CompiledModel, precision: str):
        self.compiled = compiled
        self.device = f"cpu ({precision})"
        self._local = threading.local()  # an infer request serves one thread at a time

    def run(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        # The batch's own memory as the input tensor, no copy, and none of infer()'s
        # per-call input dispatching: a live frame is one small forward pass. The output is
        # copied: the request reuses its buffer on the next call.
        request.set_input_tensor(openvino.Tensor(batch, shared_memory=True))
        request.infer()
        return request.get_output_tensor().data.copy()


def open_engine(
    path: Path, digest: str, device: str = "auto", precision: str = "auto", threads: int = 0
) -> OpenVinoEngine:
    """The engine contract's opener (sightd.engines.base.load_engine): refuses a stale file
    before compiling it."""
    if device not in ("auto", "cpu"):
        raise SightdError(
            f"engine openvino serves on the CPU here, not {device!r}; set model.device cpu "
            "or auto, or model.engine torch"
        )
    core = openvino.Core()
    try:
        model = core.read_model(str(path))
    except RuntimeError as exc:
        raise StaleEngineFile(f"{path} cannot be read by openvino: {str(exc)[:200]}") from None
    metadata = None
    if model.has_rt_info([METADATA_KEY]):
        metadata = json.loads(model.get_rt_info([METADATA_KEY]).astype(str))
    check_digest(path, metadata, digest)
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(threads),  # 0: OpenVINO's choice
        "ENABLE_CPU_PINNING": "NO",
    }
    if precision in PRECISION:
        config["INFERENCE_PRECISION_HINT"] = PRECISION[precision]
    try:
        compiled = core.compile_model(model, "CPU", config)
    except RuntimeError as exc:  # e.g. its .bin is missing or shorter than the .xml says
        raise StaleEngineFile(f"{path} cannot be compiled by openvino: {str(exc)[:200]}") from None
    chosen = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16"
    return OpenVinoEngine(compiled, {"f32": "float32", "bf16": "bfloat16"}.get(chosen, chosen))
