"""`log`: messages as JSON lines in a file, rotated by size, never a half-written line.

Durability policy: each line is one os.write() on an O_APPEND descriptor, so it is in the
kernel (and survives a crash or SIGKILL of sightd) as soon as handle() returns; fsync runs
every `fsync_interval` seconds, at each rotation and at close, which bounds what a power cut
can take. A line torn by a power cut or a full disk is cut off when the file is next opened.
Rotation: labels.jsonl -> labels.jsonl.1 -> ... -> labels.jsonl.<backups>, each a rename.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from sightd.atomic import fsync_folder
from sightd.errors import SightdError
from sightd.subscribers.base import Subscriber, SubscriberConfig, Topic

CHUNK = 64 * 1024


class LogConfig(SubscriberConfig):
    path: str = Field(description="the JSON-lines file; its folder is created")
    max_bytes: int = Field(10 * 2**20, ge=1024, description="rotate before a file passes this")
    backups: int = Field(5, ge=0, le=1000, description="rotated files kept: path.1 ... path.N")
    fsync_interval: float = Field(1.0, ge=0, le=3600, description="seconds; 0 = every line")


class LogSubscriber(Subscriber):
    Config = LogConfig
    config: LogConfig
    default_topics: ClassVar[tuple[Topic, ...]] = ("label", "event")
    example: ClassVar[dict[str, Any]] = {"path": "logs/labels.jsonl"}
    acts: ClassVar[bool] = False  # it records: unknown is logged like any label

    def start(self) -> None:
        self.path = Path(self.config.path)
        self.fd = -1
        self.last_sync = time.monotonic()
        self.rotations = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError as exc:
            raise SightdError(f"log: cannot write {self.path}: {exc.strerror}") from None

    def handle(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        data = (line + "\n").encode()
        if self.size and self.size + len(data) > self.config.max_bytes:
            self._rotate()
        _write_all(self.fd, data)
        self.size += len(data)
        if time.monotonic() - self.last_sync >= self.config.fsync_interval:
            self._sync()

    def figures(self) -> dict[str, Any]:
        return {"rotations": self.rotations}

    def close(self) -> None:
        if self.fd >= 0:
            self._sync()
            os.close(self.fd)
            self.fd = -1

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        cut = drop_torn_line(self.fd)
        if cut:
            self.log.warning("%s: removed %d bytes of a half-written line", self.path, cut)
        self.size = os.fstat(self.fd).st_size

    def _sync(self) -> None:
        os.fsync(self.fd)
        self.last_sync = time.monotonic()

    def _rotate(self) -> None:
        self.close()
        if self.config.backups == 0:
            os.unlink(self.path)
        for index in range(self.config.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.config.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        fsync_folder(self.path.parent)
        self.rotations += 1
        self._open()


def drop_torn_line(fd: int) -> int:
    """Truncate the file after its last newline; returns how many bytes were cut."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - CHUNK)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    else:
        keep = 0
    if keep < size:
        os.ftruncate(fd, keep)
    return size - keep


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
