"""`print`: one readable line per message on stdout, e.g. `12:00:01 cam0 thumbs_up 0.97`."""

from __future__ import annotations

import sys
import time
from typing import Any, ClassVar

from sightd.subscribers.base import Subscriber, Topic


def format_line(message: dict[str, Any]) -> str:
    """label: time camera label confidence; event: ... (was previous); status: its state."""
    kind = message["kind"]
    if kind == "status":
        who, state = _printable(message["component"]), _printable(message["state"])
        return f"{_clock(message['at'])} status {who} {state}"
    when = message["captured_at"] if kind == "label" else message["at"]
    label = _printable(message["label"])
    line = f"{_clock(when)} {message['camera']} {label} {message['confidence']:.2f}"
    if kind == "event":
        line += f" (was {_printable(message.get('previous') or 'nothing')})"
    return line


def _printable(text: str) -> str:
    """Escape control characters: a label must not move the cursor or clear the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


class PrintSubscriber(Subscriber):
    default_topics: ClassVar[tuple[Topic, ...]] = ("label",)
    example: ClassVar[dict[str, Any]] = {"topics": ["label", "event"]}
    acts: ClassVar[bool] = False  # it records: unknown is printed like any label

    def handle(self, message: dict[str, Any]) -> None:
        sys.stdout.write(format_line(message) + "\n")
        sys.stdout.flush()
