"""The limits the live pipeline is measured against, for benchmarks/pipeline_latency.py.

- the bare model: batched forward passes, and decoded frames -> probabilities;
- the seed's live loop: grab a frame every 0.5 s, save it to a temporary folder, read it back
  with PIL, torchvision transforms, predict, delete the file.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def bare_model(model: Path, video: Path, seconds: float = 4.0) -> dict:
    """Images/s of the model alone, one thread like the worker, served as the worker serves
    it (sightd.classifier): forward passes on batches of 64 and of 1 preprocessed images, and
    640x480 JPEG q90 frames -> probabilities in batches of 8, decoded as the worker does."""
    import torch

    from sightd.classifier import Classifier
    from sightd.preprocessing import preprocess_numpy
    from sightd.protocol import decode_image, pack_frame, unpack_frame

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    classifier = Classifier.load(model, "cpu")
    frames = read_frames(video, 64)
    batch = preprocess_numpy(frames)
    jpegs = [unpack_frame(pack_frame("cam", i, frame, 0.0)) for i, frame in enumerate(frames[:8])]
    size = classifier.info.image_size

    def jpegs_to_probabilities():
        classifier.probabilities([decode_image(header, data, size) for header, data in jpegs])

    return {
        "forward_per_s": 64 * rate(lambda: classifier.logits(batch), seconds),
        "forward_1_per_s": rate(lambda: classifier.logits(batch[:1]), seconds),
        "frames_per_s": 8 * rate(jpegs_to_probabilities, seconds),
    }


def rate(fn, seconds: float) -> float:
    fn()
    count, start_time = 0, time.perf_counter()
    while time.perf_counter() - start_time < seconds:
        fn()
        count += 1
    return count / (time.perf_counter() - start_time)


def read_frames(video: Path, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = [capture.read()[1] for _ in range(count)]
    capture.release()
    return frames


def seed_loop(model: Path, video: Path, seconds: float) -> dict:
    """The seed's live loop: grab every 0.5 s, save, read back, transform, predict, delete."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from sightd.checkpoint import load_checkpoint

    net = load_checkpoint(model).model.eval()
    transform = transforms.Compose(
        [
            transforms.Resize((64, 64)),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    capture, latencies = cv2.VideoCapture(str(video)), []
    cpu0, t0 = time.process_time(), time.time()
    with tempfile.TemporaryDirectory() as folder:
        while time.time() - t0 < seconds:
            ok, frame = capture.read()
            grabbed = time.time()
            path = Path(folder) / f"frame_{len(latencies)}.jpg"
            cv2.imwrite(str(path), frame)
            image = Image.open(path).convert("RGB")
            with torch.no_grad():
                net(transform(image).unsqueeze(0)).argmax(1).item()
            path.unlink()
            latencies.append(1000 * (time.time() - grabbed))
            time.sleep(max(0.0, 0.5 - (time.time() - grabbed)))
    cpu = time.process_time() - cpu0
    latencies.sort()
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "cpu_percent": 100 * cpu / (time.time() - t0),
    }
