"""The inference worker: newest frame of every camera -> one batch -> labels, events, status.

Each cycle drains the frame socket (intake.py), drops frames older than model.max_frame_age,
crops each camera's roi, classifies the rest in one forward pass, and publishes a label per
frame and an event when a camera's stable label changes (events.py). The model file is
hot-reloaded (model_watcher.py). Nothing here imports torch: the model is served by the engine
model.engine names (sightd/engines), and only the torch engine loads it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import zmq

from sightd.classifier import Classifier
from sightd.component import Component
from sightd.config import EventsConfig, SightdConfig
from sightd.preprocessing import crop_roi, roi_min_side
from sightd.process import RateMeter, Runtime
from sightd.protocol import decode_image, encode_image, event_body, label_body, pack_message
from sightd.publishers.events import Debouncer, decide_label
from sightd.publishers.intake import FrameIntake
from sightd.publishers.model_watcher import ModelWatcher, file_signature, load_tested
from sightd.publishers.snapshots import SnapshotWriter
from sightd.transport import connect_subscriber, labels_publisher

log = logging.getLogger("sightd.infer")


def run_inference(config: SightdConfig, runtime: Runtime) -> None:
    """Classify every camera's frames until runtime.stop is set."""
    Worker(config, runtime).run()


def model_input(
    header: dict[str, Any], payload: bytes, image_size: int, roi: list[float] | None
) -> np.ndarray:
    """The pixels the model classifies: the camera's roi of the frame, decoded at the smallest
    JPEG scale at which that roi still covers the model's input size."""
    return crop_roi(decode_image(header, payload, roi_min_side(image_size, roi)), roi)


def as_jpeg(header: dict[str, Any], payload: bytes) -> bytes:
    """The frame as JPEG bytes: as it came when the camera sends JPEG, encoded otherwise."""
    if header["encoding"] == "jpeg":
        return bytes(payload)
    return encode_image(decode_image(header, payload), "jpeg")


def debouncer(events: EventsConfig) -> Debouncer:
    return Debouncer(events.stable_frames, events.min_hold_s, events.start_confidence)


def limit_threads(threads: int) -> None:
    """Few CPU threads: a parallel op waits for its slowest thread, and on cores shared with
    captures one of them is often preempted, which stalls the whole forward pass. (The engine
    takes model.threads for its own threads.)"""
    if threads > 0:
        cv2.setNumThreads(threads)


@dataclass
class CycleFigures:
    """Figures of one status interval (latency, frame age); totals live in the counters."""

    classified: int = 0
    latency_sum: float = 0.0
    max_age: float = 0.0
    batches: int = 0  # forward passes, each over the newest frame of every camera that had one
    batched: int = 0  # frames in them
    max_batch: int = 0


class Worker(Component):
    def __init__(
        self, config: SightdConfig, runtime: Runtime, name: str = "infer", via_proxy: bool = False
    ):
        """`name` and `via_proxy` for a named worker (sightd/daemon/workers.py): it sends to
        the labels proxy (transport.labels_in) instead of binding transport.labels."""
        super().__init__(name, config.transport, runtime)
        self.config = config
        transport, model = config.transport, config.model
        self.pub = labels_publisher(transport, via_proxy)
        self.classifier: Classifier | None = None
        self.publish_status()  # "starting": loading the model can take a while
        limit_threads(model.threads)
        signature = file_signature(model.path)
        max_batch = max(1, len(config.cameras))  # one newest frame per camera
        if signature is None:  # no model yet (a first `sightd run`): wait for one, serve later
            self.set_state("starting", waiting_reason(model.path))
        else:
            try:
                # A bad file is fatal here. An engine export being made beats: it is progress.
                self.classifier = load_tested(model, max_batch, runtime.beat, runtime.stop.is_set)
            except BaseException:
                self.pub.close()
                raise
        watch = model.reload or self.classifier is None  # the wait is a watch, reload or not
        self.watcher = ModelWatcher(model, signature, max_batch) if watch else None
        cameras = {c.name for c in config.cameras}
        self.rois = {c.name: c.roi for c in config.cameras}
        sub = connect_subscriber([], [b"frame."], transport)  # FrameIntake connects it
        self.intake = FrameIntake(sub, cameras, config.frame_endpoints(), self.poller(sub))
        self.debouncers = {name: debouncer(config.events) for name in cameras}
        self.per_camera = {name: Counter() for name in cameras}  # labels, stale, events
        self.frames_out = self.stale = self.decode_errors = self.classify_errors = 0
        self.last_error: str | None = None
        snapshots = config.events.snapshots
        self.snapshots = SnapshotWriter(snapshots) if snapshots is not None else None
        self.cycle_figures, self.rate = CycleFigures(), RateMeter()
        if self.classifier is None:
            log.warning("%s", self.reason)
            return
        self.set_state("online")
        log.info("worker online: model %s on %s", self.classifier.name, self.classifier.device)

    def cycle(self, wait: float) -> None:
        frames = self.intake.collect(wait)  # drained while waiting too: no stale backlog later
        if frames and self.classifier is not None:
            self._classify(frames)
        self._swap_model_if_ready()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        if self.snapshots is not None:
            self.snapshots.close()
        self.intake.close()
        self.pub.close()

    def _classify(self, frames: dict[str, tuple[dict[str, Any], bytes]]) -> None:
        # The age is checked before decoding and again after the forward pass: a stale frame
        # costs no decoding, and no label describes a frame older than max_frame_age.
        batch = []  # (header, payload, image) of every camera's newest frame fit to classify
        for header, payload in frames.values():
            image = self._decode(header, payload) if self._fresh(header) else None
            if image is not None:
                batch.append((header, payload, image))
        if not batch:
            return
        started = time.perf_counter()
        try:
            predictions = self.classifier.predict([image for _, _, image in batch])
        except Exception:  # e.g. out of device memory: skip this batch, keep serving
            log.exception("classification failed; %d frame(s) skipped", len(batch))
            self.classify_errors += 1
            return
        inference_s = time.perf_counter() - started
        cycle = self.cycle_figures
        cycle.batches, cycle.batched = cycle.batches + 1, cycle.batched + len(batch)
        cycle.max_batch = max(cycle.max_batch, len(batch))
        for (header, payload, _), prediction in zip(batch, predictions, strict=True):
            if self._fresh(header):
                self._publish(header, payload, prediction, inference_s)

    def _decode(self, header: dict[str, Any], payload: bytes):
        try:
            size, roi = self.classifier.info.image_size, self.rois[header["camera"]]
            return model_input(header, payload, size, roi)
        except Exception as exc:  # ProtocolError, or whatever else a hostile payload finds
            self.decode_errors += 1
            self.last_error = str(exc)[:200]
            return None

    def _fresh(self, header: dict[str, Any]) -> bool:
        """Taken within max_frame_age of now (a frame from the future is not trusted either)."""
        fresh = abs(time.time() - header["captured_at"]) <= self.config.model.max_frame_age
        if not fresh:
            self.stale += 1
            self.per_camera[header["camera"]]["stale"] += 1
        return fresh

    def _publish(self, header: dict, payload: bytes, prediction, inference_s: float) -> None:
        camera, seq, confidence = header["camera"], header["seq"], prediction.confidence
        label = decide_label(prediction.label, confidence, self.config.model.min_confidence)
        info = {"name": self.classifier.info.arch, "hash": self.classifier.digest}
        body = label_body(
            camera, seq, header["captured_at"], label, confidence, prediction.scores, info
        )
        body["inference_s"] = round(inference_s, 6)
        self._send(pack_message("label", camera, body))
        self.frames_out += 1
        self.per_camera[camera]["labels"] += 1
        self.rate.add()
        age = body["inferred_at"] - header["captured_at"]
        self.cycle_figures.classified += 1
        self.cycle_figures.latency_sum += age
        self.cycle_figures.max_age = max(self.cycle_figures.max_age, age)
        change = self.debouncers[camera].update(label, confidence, header["captured_at"])
        if change is not None:
            log.info("%s: %s -> %s", camera, change.previous, change.label)
            event = event_body(
                camera,
                change.label,
                change.previous,
                change.confidence,
                seq,
                frames=change.frames,
                held_s=change.held_s,
            )
            if self.snapshots is not None:
                name = self.snapshots.save(camera, seq, as_jpeg(header, payload))
                if name is not None:
                    event["snapshot"] = name
            self._send(pack_message("event", camera, event))
            self.per_camera[camera]["events"] += 1

    def _swap_model_if_ready(self) -> None:
        if self.watcher is None:
            return
        self.watcher.poll()
        new = self.watcher.take()
        if new is None:
            if self.classifier is None and self.watcher.last_error:
                path = self.config.model.path
                self.reason = f"{waiting_reason(path)} (refused: {self.watcher.last_error})"
            return
        if self.classifier is None:
            log.info("model loaded: %s; worker online", new.name)
            self.set_state("online")
            if not self.config.model.reload:  # the watch was only the wait for a first model
                self.watcher.close()
                self.watcher = None
        else:
            log.info("model swapped: %s -> %s", self.classifier.name, new.name)
        self.classifier = new

    def _send(self, parts: list[bytes]) -> None:
        try:
            self.pub.send_multipart(parts, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # PUB drops for slow readers; this is a closed socket
            log.debug("send failed: %s", exc)

    def figures(self) -> dict[str, Any]:
        if self.classifier is None:
            return self._waiting_figures() if hasattr(self, "intake") else {}
        counts, cycle, watcher = self.intake.counts, self.cycle_figures, self.watcher
        self.cycle_figures = CycleFigures()
        info = self.classifier.info
        figures = {
            "model": {
                "name": self.classifier.name,
                "arch": info.arch,
                "digest": self.classifier.digest,
                "classes": list(info.classes),
                "engine": self.classifier.engine.name,
                "device": self.classifier.engine.device,
                "torch_loaded": "torch" in sys.modules,  # False unless the engine is torch
            },
            "frames_in": counts.frames_in,
            "frames_out": self.frames_out,
            "dropped": counts.dropped,
            "stale": self.stale,
            "malformed": counts.malformed,
            "decode_errors": self.decode_errors,
            "classify_errors": self.classify_errors,
            "last_error": self.last_error or counts.last_malformed,
            "fps": round(self.rate.rate(), 2),
            "resets": self.intake.reconnector.resets,
            "reloads": watcher.reloads if watcher else 0,
            "model_errors": watcher.errors if watcher else 0,
            "model_error": watcher.last_error if watcher else None,
            "labels": {cam: d.stable for cam, d in self.debouncers.items()},
            **(self._snapshot_figures() if self.snapshots is not None else {}),
            "cameras": {
                cam: {**counts.camera(cam), **self.per_camera[cam]} for cam in self.per_camera
            },
        }
        if cycle.classified:  # no latency to speak of when nothing flowed
            figures["latency_ms"] = round(1000 * cycle.latency_sum / cycle.classified, 2)
            figures["max_age_ms"] = round(1000 * cycle.max_age, 2)
        if cycle.batches:  # frames per forward pass over the interval: how far cameras batch
            figures["batch"] = {"mean": round(cycle.batched / cycle.batches, 2),
                                "max": cycle.max_batch}  # fmt: skip
        return figures

    def _snapshot_figures(self) -> dict[str, Any]:
        writer = self.snapshots
        return {"snapshots": {"written": writer.written, "dropped": writer.dropped,
                              "errors": writer.errors}}  # fmt: skip

    def _waiting_figures(self) -> dict[str, Any]:
        """While no model is served: frames still arrive (and are dropped), a refused file is
        said."""
        counts, watcher = self.intake.counts, self.watcher
        return {"frames_in": counts.frames_in, "frames_out": 0, "model_path": str(watcher.path),
                "waiting_for_model": True, "model_errors": watcher.errors,
                "model_error": watcher.last_error}  # fmt: skip


def waiting_reason(path) -> str:
    return (
        f"waiting for a model at {path}: train one (the console's Teach page or "
        "`sightd train`); it is loaded as soon as it appears"
    )
