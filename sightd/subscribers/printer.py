"""`print`: one readable line per message on stdout, e.g. `12:00:01 cam0 thumbs_up 0.97`."""

from __future__ import annotations

import sys
import time
from typing import Any, ClassVar

from sightd.publishers.events import UNKNOWN
from sightd.subscribers.base import Subscriber, Topic


def format_line(message: dict[str, Any]) -> str:
    """label: time camera label confidence (and the top guess beside unknown); event: the same
    with (was previous), or (first) for a camera's first stable label; status: its state."""
    kind = message["kind"]
    if kind == "status":
        who, state = _printable(message["component"]), _printable(message["state"])
        return f"{_clock(message['at'])} status {who} {state}"
    when = message["captured_at"] if kind == "label" else message["at"]
    label = _printable(message["label"])
    line = f"{_clock(when)} {message['camera']} {label} {message['confidence']:.2f}"
    scores = message.get("scores")
    if kind == "label" and message["label"] == UNKNOWN and isinstance(scores, dict) and scores:
        line += f" (best guess {_printable(max(scores, key=scores.get))})"
    if kind == "event":
        previous = message.get("previous")  # None, as in the log: no stable label before
        line += f" (was {_printable(previous)})" if previous is not None else " (first)"
    return line


def _printable(text: str) -> str:
    """Escape control characters: a label must not move the cursor or clear the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


class PrintSubscriber(Subscriber):
    default_topics: ClassVar[tuple[Topic, ...]] = ("label", "event")
    example: ClassVar[dict[str, Any]] = {"topics": ["event"]}
    acts: ClassVar[bool] = False  # it records: unknown is printed like any label

    def handle(self, message: dict[str, Any]) -> None:
        sys.stdout.write(format_line(message) + "\n")
        sys.stdout.flush()
