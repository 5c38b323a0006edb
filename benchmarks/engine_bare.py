"""The engines alone, for benchmarks/engines.py: which are installed here, the bare model's
speed per engine and precision, and accuracy on the digits test split.

- `engine_rows`: torch, onnxruntime and openvino on the CPU where installed, and where a GPU is
  present torch on CUDA and onnxruntime's CUDAExecutionProvider (each detected);
- `bare`: one thread, a fresh process each, as the worker serves it (sightd.classifier logits
  on a preprocessed batch): batch 1 back to back and after 100 ms idle (the 2 fps case), ms
  (median); batch 8 and 64, images/s; three rounds, the engines taking turns, the median of
  each figure;
- `accuracy` and `differences`: the test split's probabilities per engine, and the images whose
  label differs from a reference's, with the two top probabilities of each.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np


def engine_rows(wanted: list[str] | None) -> list[dict]:
    """(engine, device) pairs present here, each with the precisions worth measuring."""
    from sightd.engines.base import installed

    rows = [{"engine": "torch", "device": "cpu", "precisions": ["auto", "float32"]}]
    if installed("onnxruntime"):
        rows.append({"engine": "onnxruntime", "device": "cpu", "precisions": ["float32"]})
    if installed("openvino"):
        rows.append({"engine": "openvino", "device": "cpu", "precisions": ["auto", "float32"]})
    probe = "import torch; print(torch.cuda.is_available())"
    if run_python(probe).strip() == "True":
        rows.append({"engine": "torch", "device": "cuda", "precisions": ["auto", "float32"]})
    if installed("onnxruntime"):
        probe = (
            "import onnxruntime as o; print('CUDAExecutionProvider' in o.get_available_providers())"
        )
        if run_python(probe).strip() == "True":
            rows.append({"engine": "onnxruntime", "device": "cuda", "precisions": ["float32"]})
    for row in rows:
        row["name"] = f"{row['engine']} ({row['device']})"
    return [r for r in rows if not wanted or r["engine"] in wanted or r["name"] in wanted]


def run_python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else code)
    return done.stdout


# ---- the bare model, in a process of its own -----------------------------------------------

BARE = """
import json, sys, time
import numpy as np
from sightd.classifier import Classifier
model, engine, device, precision = sys.argv[1:5]
served = Classifier.load(model, device, precision, engine, threads=1)
size = served.info.image_size
batch = np.random.default_rng(0).standard_normal((64, 3, size, size)).astype(np.float32)
for n in (1, 8, 64):
    for _ in range(20):
        served.logits(batch[:n])

def ms(n, pause, runs):
    times = []
    for _ in range(runs):
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        served.logits(batch[:n])
        times.append(1000 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2]

def per_s(n, seconds=2.0):
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        served.logits(batch[:n])
        count += n
    return count / (time.perf_counter() - start)

print(json.dumps({"device": served.device, "b1_ms": ms(1, 0.0, 500),
                  "b1_idle_ms": ms(1, 0.1, 40), "b8_per_s": per_s(8), "b64_per_s": per_s(64)}))
"""


def bare(model: Path, rows: list[dict], rounds: int = 3) -> dict:
    """Each engine and precision `rounds` times, taking turns; the median of each figure."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(rounds):
        for row in rows:
            for precision in row["precisions"]:
                args = (str(model), row["engine"], row["device"], precision)
                runs.setdefault((row["name"], precision), []).append(
                    json.loads(run_python(BARE, *args))
                )
    out: dict[str, dict] = {}
    for (name, precision), got in runs.items():
        figures = {k: statistics.median(r[k] for r in got) for k in got[0] if k != "device"}
        out.setdefault(name, {})[precision] = {"device": got[0]["device"], **figures}
    return out


# ---- accuracy on the digits test split ---------------------------------------------------------

ACCURACY = """
import json, sys
from sightd.trainer.evaluate import evaluate_checkpoint
model, data, engine, device, precision = sys.argv[1:6]
result = evaluate_checkpoint(model, data, "test", device, engine, precision)
print(json.dumps({"paths": result.data.paths, "truth": result.data.labels.tolist(),
                  "probabilities": result.probabilities.tolist()}))
"""


def accuracy(model: Path, data: Path, row: dict, precision: str) -> dict:
    args = (str(model), str(data), row["engine"], row["device"], precision)
    return json.loads(run_python(ACCURACY, *args))


def differences(reference: dict, other: dict) -> list[dict]:
    """Test images whose label differs from the reference's, with both top-two probabilities."""
    out = []
    ref, got = np.array(reference["probabilities"]), np.array(other["probabilities"])
    for i in np.flatnonzero(ref.argmax(1) != got.argmax(1)):
        top = lambda p: [round(float(v), 4) for v in np.sort(p)[::-1][:2]]  # noqa: E731
        out.append({"path": other["paths"][i], "torch": top(ref[i]), "this": top(got[i])})
    return out
