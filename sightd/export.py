"""`sightd export`: a checkpoint as an ONNX, OpenVINO or TorchScript file that checks itself.

The safetensors checkpoint stays the one source of truth; an export is made from it with batch
norm folded and a dynamic batch axis, and carries the checkpoint's metadata (classes, image
size, mean, std, temperature, arch, sightd version) and the checkpoint's digest, so a reader
can tell which checkpoint it came from and whether it is stale. Before the file is kept, its
probabilities are compared with the checkpoint's on a batch of inputs; beyond the format's
tolerance the export fails and says by how much.

Input "input": float32 N x 3 x S x S, normalised as sightd.preprocessing.preprocess gives it.
Output "logits": N x classes; probabilities are softmax(logits / temperature).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import click
import numpy as np

from sightd import __version__
from sightd.errors import SightdError

FORMATS = ("onnx", "openvino", "torchscript")
SUFFIXES = {"onnx": ".onnx", "openvino": ".openvino.xml", "torchscript": ".torchscript.pt"}
# Largest difference allowed between the export and the checkpoint, in probability and in logits
# relative to their largest magnitude. Each file is checked in float32, what it holds: serving
# OpenVINO in bfloat16 (model.precision) is a choice of arithmetic, not a defect of the file.
TOLERANCE = {"onnx": 1e-4, "torchscript": 1e-5, "openvino": 1e-4}
CHECK_BATCH = 8  # inputs compared; also proves that a batch other than the traced one works
METADATA_KEY = "sightd"
OPSET = 17


@click.command("export")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="onnx", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Default: beside MODEL.")
@click.option("--no-check", is_flag=True, help="Skip comparing the export with the checkpoint.")
def export_command(model: str, fmt: str, out: str | None, no_check: bool) -> None:
    """Write MODEL (a .safetensors checkpoint) as ONNX, OpenVINO or TorchScript.

    Batch norm folded, a dynamic batch axis, the checkpoint's metadata inside; the export's
    probabilities are checked against the checkpoint's before it is kept.
    """
    written = export_model(model, fmt, out, check=not no_check)
    tolerance = "not checked" if no_check else f"checked to {TOLERANCE[fmt]:g}"
    click.echo(f"wrote {written} ({fmt}, {tolerance})")


def default_path(checkpoint: Path, fmt: str) -> Path:
    """model.safetensors -> model.onnx, model.openvino.xml, model.torchscript.pt beside it."""
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + SUFFIXES[fmt])


def export_model(checkpoint_path: str | Path, fmt: str, out: str | Path | None = None,
                 check: bool = True) -> Path:  # fmt: skip
    """Write `checkpoint_path` as `fmt` to `out` (default beside it); the path written."""
    import torch

    from sightd.checkpoint import load_checkpoint
    from sightd.model import fold_batch_norm

    if fmt not in FORMATS:
        raise SightdError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    out = Path(out) if out is not None else default_path(checkpoint_path, fmt)
    model = fold_batch_norm(checkpoint.model.eval()).float()
    meta = export_metadata(checkpoint)
    size = checkpoint.info.image_size
    example = torch.randn(2, 3, size, size)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        staged = Path(tmp) / out.name
        _WRITERS[fmt](model, example, meta, staged)
        if check:
            _check(fmt, staged, model, size, meta)
        out.parent.mkdir(parents=True, exist_ok=True)
        # Renamed into place (the weights first): a reader never sees a half-written export.
        for part, target in reversed(list(zip(_parts(staged), _parts(out), strict=True))):
            os.replace(part, target)
    return out


def export_metadata(checkpoint) -> dict[str, Any]:
    info = checkpoint.info
    return {
        "arch": info.arch,
        "classes": list(info.classes),
        "image_size": info.image_size,
        "mean": list(info.mean),
        "std": list(info.std),
        "temperature": info.temperature,
        "test_accuracy": info.test_accuracy,
        "sightd_version": __version__,
        "source_digest": checkpoint.digest,
    }


def read_export_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata an export carries; imports no torch for ONNX and OpenVINO files."""
    path = Path(path)
    try:
        if path.name.endswith(SUFFIXES["onnx"]):
            import onnx

            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
                     .metadata_props}  # fmt: skip
            return json.loads(props[METADATA_KEY])
        if path.name.endswith(SUFFIXES["openvino"]):
            import openvino

            model = openvino.Core().read_model(str(path))
            return json.loads(model.get_rt_info([METADATA_KEY]).astype(str))
        if path.name.endswith(SUFFIXES["torchscript"]):
            import torch

            files = {"sightd.json": ""}
            with _torchscript_quietly():
                torch.jit.load(str(path), _extra_files=files, map_location="cpu")
            return json.loads(files["sightd.json"])
    except FileNotFoundError:
        raise SightdError(f"export {path} does not exist; make it with `sightd export`") from None
    except (KeyError, ValueError, RuntimeError) as exc:
        raise SightdError(f"export {path} carries no sightd metadata ({exc})") from None
    raise SightdError(f"{path}: not an export (expected {', '.join(SUFFIXES.values())})")


# ---- writers ---------------------------------------------------------------------------------


def _write_onnx(model, example, meta: dict, out: Path) -> None:
    import onnx
    import torch

    torch.onnx.export(
        model, (example,), str(out), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
        dynamo=False,  # the TorchScript exporter: no onnxscript needed, a stable graph
    )  # fmt: skip
    proto = onnx.load(str(out))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))


def _write_openvino(model, example, meta: dict, out: Path) -> None:
    import openvino

    onnx_file = out.with_name("staged.onnx")
    _write_onnx(model, example, meta, onnx_file)
    converted = openvino.convert_model(str(onnx_file))
    converted.set_rt_info(json.dumps(meta), [METADATA_KEY])
    openvino.save_model(converted, str(out), compress_to_fp16=False)
    onnx_file.unlink()


def _write_torchscript(model, example, meta: dict, out: Path) -> None:
    import torch

    with _torchscript_quietly(), torch.no_grad():
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(out), _extra_files={"sightd.json": json.dumps(meta)})


@contextlib.contextmanager
def _torchscript_quietly():
    """torch deprecates TorchScript in favour of torch.export; for a C++ or older-torch reader
    it is still the format that loads without Python, so its warning is not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        yield


_WRITERS = {"onnx": _write_onnx, "openvino": _write_openvino, "torchscript": _write_torchscript}


def _parts(staged: Path) -> list[Path]:
    """The files of an export: OpenVINO keeps its weights beside the .xml, as .bin."""
    if staged.name.endswith(".xml"):
        return [staged, staged.with_suffix(".bin")]
    return [staged]


# ---- the self-check --------------------------------------------------------------------------


def _check(fmt: str, staged: Path, model, size: int, meta: dict) -> None:
    """Logits and probabilities of the export against the checkpoint's, on images as the
    pipeline makes them (random pixels, normalised) and on noise beyond that range. Logits are
    compared relative to their size: probabilities alone hide errors where softmax saturates."""
    import torch

    batch = check_batch(size, meta["mean"], meta["std"])
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    got = _run(fmt, staged, batch)
    logit_error = float(np.abs(got - expected).max() / max(1.0, np.abs(expected).max()))
    temperature = meta["temperature"]
    probability_error = float(
        np.abs(_softmax(got / temperature) - _softmax(expected / temperature)).max()
    )
    worst = max(logit_error, probability_error)
    if not worst <= TOLERANCE[fmt]:
        raise SightdError(
            f"{fmt} export disagrees with the checkpoint: logits or probabilities differ by up "
            f"to {worst:.2g} (allowed {TOLERANCE[fmt]:g}); the export was not written"
        )


def check_batch(size: int, mean, std) -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (CHECK_BATCH // 2, 3, size, size)).astype(np.float32) / 255
    images = (pixels - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    noise = rng.standard_normal((CHECK_BATCH - len(images), 3, size, size))
    return np.concatenate([images, noise]).astype(np.float32)


def _run(fmt: str, path: Path, batch: np.ndarray) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"input": batch})[0]
    if fmt == "openvino":
        import openvino

        exact = {"INFERENCE_PRECISION_HINT": "f32"}  # not bfloat16 where the CPU has it
        compiled = openvino.Core().compile_model(str(path), "CPU", exact)
        return compiled(batch)[compiled.output(0)]
    import torch

    with _torchscript_quietly(), torch.no_grad():
        return torch.jit.load(str(path)).eval()(torch.from_numpy(batch)).numpy()


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
