"""The demo's judge: listens to the bus like any client and scores events against the cards.

A card counts when every one of its frames was shown while the pipeline was up (between the
first and the last labelled frame); it is announced correctly when an event naming its digit
came from one of its frames. Events naming anything else are counted as wrong.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from sightd.config import SightdConfig
from sightd.protocol import ProtocolError, unpack_message
from sightd.transport import connect_subscriber


@dataclass
class Heard:
    labels: list[dict] = field(default_factory=list)  # bodies, plus "received_at"
    events: list[dict] = field(default_factory=list)


class Collector(threading.Thread):
    """Records labels and events; sets `done` once `seconds` have passed since the first label.

    `give_up_after` bounds the wait for that first label (model loading, a broken setup).
    """

    def __init__(self, config: SightdConfig, seconds: float, done: threading.Event, give_up_after):
        super().__init__(name="demo-collector", daemon=True)
        self.config, self.seconds, self.done = config, seconds, done
        self.give_up_after = give_up_after
        self.heard = Heard()
        self.first_label_at: float | None = None
        self.on_first_label = lambda: None
        transport = config.transport
        self._sock = connect_subscriber([transport.labels], [b"label.", b"event."], transport)

    def run(self) -> None:
        started = time.monotonic()
        try:
            while not self.done.is_set():
                if self._sock.poll(200):
                    self._receive()
                if self._finished(time.monotonic() - started):
                    self.done.set()
        finally:
            self._sock.close()

    def _finished(self, elapsed: float) -> bool:
        if self.first_label_at is None:
            return elapsed > self.give_up_after
        return time.monotonic() - self.first_label_at >= self.seconds

    def _receive(self) -> None:
        try:
            kind, _, body = unpack_message(self._sock.recv_multipart(zmq.NOBLOCK))
        except (zmq.Again, ProtocolError):
            return
        body["received_at"] = time.time()
        if kind == "event":
            self.heard.events.append(body)
        elif kind == "label":
            self.heard.labels.append(body)
            if self.first_label_at is None:
                self.first_label_at = time.monotonic()
                self.on_first_label()


@dataclass
class Score:
    cards: int  # cards shown entirely while the pipeline was up
    announced: int  # of those, announced by an event naming the right digit
    wrong_events: int
    latencies_ms: list[float]  # capture to arrival here, per label

    @property
    def accuracy(self) -> float:
        return self.announced / self.cards if self.cards else 0.0

    def summary(self) -> str:
        if not self.latencies_ms:
            return "no labels arrived: the pipeline never came up (see the log above)"
        p50, p99 = np.percentile(self.latencies_ms, [50, 99])
        return (
            f"event accuracy {self.accuracy:.0%} ({self.announced} of {self.cards} cards "
            f"announced in order, {self.wrong_events} wrong events); latency capture to "
            f"subscriber p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(self.latencies_ms)} labels"
        )


def score(heard: Heard, order: list[str], frames_per_card: int) -> Score:
    latencies = [1000 * (b["received_at"] - b["captured_at"]) for b in heard.labels]
    if not heard.labels:
        return Score(0, 0, len(heard.events), latencies)
    first = min(b["seq"] for b in heard.labels)
    last = max(b["seq"] for b in heard.labels)
    cards = range(-(-first // frames_per_card), (last + 1) // frames_per_card)
    announced = wrong = 0
    for card in cards:
        truth = order[card % len(order)]
        shown = range(card * frames_per_card, (card + 1) * frames_per_card)
        named = [e["label"] for e in heard.events if e["seq"] in shown]
        announced += truth in named
        wrong += sum(label != truth for label in named)
    return Score(len(cards), announced, wrong, latencies)
