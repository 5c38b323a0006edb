"""Hot reload: watch the model file, load and test a changed one off the hot path, hand it over.

A new file is only taken once it has stopped changing for one poll (a copy in progress is not
loaded half-way) and has passed a test forward pass; a bad file is reported and the old model
keeps serving. Rewriting the file (a new mtime, size or inode) triggers a new attempt. With an
engine other than torch the new checkpoint's export is made first (in a subprocess), here,
off the hot path, so a swap works and refuses the same with every engine.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sightd.classifier import Classifier
from sightd.config import ModelConfig
from sightd.errors import SightdError

log = logging.getLogger("sightd.infer")

POLL_SECONDS = 1.0  # how often the file is looked at; a stat costs microseconds


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(mtime_ns, size, inode): changes on any rewrite, including an atomic rename."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def smoke_test(classifier: Classifier, max_batch: int = 1) -> None:
    """Forward passes on blank frames, one for each batch size up to max_batch: the model runs
    and gives finite probabilities, and the kernels for every batch the worker can form are
    built here (the first pass of a new size takes several times longer), not on a live frame."""
    size = classifier.info.image_size
    for count in range(1, max_batch + 1):
        probabilities = classifier.probabilities([np.zeros((size, size, 3), np.uint8)] * count)
        if probabilities.shape != (count, len(classifier.info.classes)):
            raise SightdError(f"test pass gave shape {probabilities.shape}")
        if not np.isfinite(probabilities).all():
            raise SightdError("test pass gave non-finite probabilities (NaN or inf weights?)")


def load_tested(
    config: ModelConfig,
    max_batch: int = 1,
    progress: Callable[[], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Classifier:
    """The model config.path names, served by config.engine on config.device at
    config.precision with config.threads, tested. `progress` and `cancelled` serve while an
    engine's export of the checkpoint is made (sightd.engines.engine_files)."""
    classifier = Classifier.load(
        config.path,
        config.device,
        config.precision,
        config.engine,
        config.threads,
        progress,
        cancelled,
    )
    smoke_test(classifier, max_batch)
    return classifier


class ModelWatcher:
    """`poll()`, called from the worker's loop, looks at `path` at most every POLL_SECONDS (no
    thread wakes up just to look); a changed file is loaded and tested in a thread of its own;
    `take()` returns the new tested Classifier once, else None."""

    def __init__(self, config: ModelConfig, signature: tuple | None, max_batch: int = 1):
        self.config, self.path, self.max_batch = config, Path(config.path), max_batch
        self.signature = signature  # of the file the serving model came from
        self.reloads = self.errors = 0
        self.last_error: str | None = None
        self._ready: Classifier | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pending: tuple | None = None  # seen changed once: loaded if the next look agrees
        self._next_look = time.monotonic() + POLL_SECONDS
        self._loader: threading.Thread | None = None

    def poll(self) -> None:
        now = time.monotonic()
        if now < self._next_look or (self._loader is not None and self._loader.is_alive()):
            return
        self._next_look = now + POLL_SECONDS
        signature = file_signature(self.path)
        if signature is None or signature == self.signature:
            self._pending = None
        elif signature != self._pending:
            self._pending = signature
        else:
            self._pending = None
            self.signature = signature  # a bad file is tried once; rewriting it triggers a retry
            self._loader = threading.Thread(target=self._try_load, name="model loader", daemon=True)
            self._loader.start()

    def take(self) -> Classifier | None:
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def close(self) -> None:
        self._stop.set()  # an export being made for the new model is stopped too
        if self._loader is not None:
            self._loader.join(timeout=5.0)

    def _try_load(self) -> None:
        try:
            classifier = load_tested(self.config, self.max_batch, cancelled=self._stop.is_set)
        except Exception as exc:  # SightdError for bad files; anything else must not kill us
            self.errors += 1
            self.last_error = str(exc) if isinstance(exc, SightdError) else repr(exc)
            log.error("model reload refused, the old model keeps serving: %s", self.last_error)
            return
        with self._lock:
            self._ready = classifier
        self.reloads += 1
        self.last_error = None
        log.info("model reloaded: %s", classifier.name)
