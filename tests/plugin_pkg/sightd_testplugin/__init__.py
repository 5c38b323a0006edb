"""A third-party subscriber: appends each message to a file, and can raise, hang or dawdle.

`fail_on`, `hang_on` and `delay` let the tests prove that one broken subscriber cannot stall
the others or the pipeline.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from pydantic import Field

from sightd.subscribers.base import Subscriber, SubscriberConfig


class RecorderConfig(SubscriberConfig):
    path: str = Field(description="JSON lines of every handled message, with handled_at")
    fail_on: str | None = Field(None, description="raise on this label")
    hang_on: str | None = Field(None, description="never return on this label (* = any)")
    delay: float = Field(0.0, ge=0, description="seconds each message takes")


class Recorder(Subscriber):
    Config = RecorderConfig
    config: RecorderConfig
    example = {"path": "recorded.jsonl"}

    def start(self) -> None:
        self.file = open(self.config.path, "a", encoding="utf-8")  # noqa: SIM115

    def handle(self, message: dict[str, Any]) -> None:
        label = message.get("label")
        if label == self.config.fail_on:
            raise RuntimeError(f"recorder was told to fail on {label}")
        if self.config.hang_on in (label, "*"):
            threading.Event().wait()
        time.sleep(self.config.delay)
        self.file.write(json.dumps({**message, "handled_at": time.time()}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
