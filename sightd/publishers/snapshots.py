"""Event snapshots: the frame that completed each event, kept as a JPEG beside the event.

"Why did the lights go on at 3 am" needs a picture. The worker hands the frame's bytes over and
goes on: a thread of its own writes them (atomically, so a reader never sees half a file) and
prunes the oldest beyond `keep`. When it falls behind, snapshots are dropped and counted; the
pipeline never waits for a disk.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from sightd.atomic import atomic_write_bytes
from sightd.config import SnapshotsConfig

log = logging.getLogger("sightd.infer")

QUEUE_SIZE = 16  # snapshots waiting for the disk at most; events are rare, a burst is not


class SnapshotWriter:
    def __init__(self, config: SnapshotsConfig):
        self.folder, self.keep = Path(config.dir), config.keep
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written = self.dropped = self.errors = 0
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._work, name="snapshots", daemon=True)
        self._thread.start()

    def save(self, camera: str, seq: int, jpeg: bytes) -> str | None:
        """Queue the frame; the file name the event carries, or None when it was dropped."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{camera}-{stamp}-{seq}.jpg"  # camera names are [A-Za-z0-9_-]: a safe name
        try:
            self._queue.put_nowait((name, jpeg))
        except queue.Full:
            self.dropped += 1
            return None
        return name

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5.0)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            name, jpeg = item
            try:
                atomic_write_bytes(self.folder / name, jpeg)
                self.written += 1
                self._prune()
            except OSError as exc:
                self.errors += 1
                log.warning("snapshot %s not written: %s", name, exc.strerror or exc)

    def _prune(self) -> None:
        snapshots = sorted(self.folder.glob("*.jpg"), key=lambda p: p.stat().st_mtime_ns)
        for old in snapshots[: max(0, len(snapshots) - self.keep)]:
            old.unlink(missing_ok=True)
