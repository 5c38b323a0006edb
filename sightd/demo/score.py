"""The demo's judge: listens to the bus like any client and scores events against the video.

The video is a known timeline of segments (a digit card, or nothing), so every frame's `seq`
says what was on screen. The rules, the same for the demo and benchmarks/event_accuracy.py:

- An event is judged by the frame that completed it (its `seq`), not by when it arrived, so
  latency can neither excuse nor condemn it. It is wrong when it names a class that is not on
  screen in that frame, wherever it falls: on a card, in a cross-fade (where both classes are
  on screen), or on an empty desk. An event to `unknown` is never wrong.
- A segment counts when all its frames were shown while the pipeline was up (between the first
  and the last labelled frame). It is announced when an event naming its class came from one of
  the frames it is on screen in; its latency runs from the capture of its first fully visible
  frame to that event's arrival here.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import zmq

from sightd.config import SightdConfig
from sightd.protocol import decode_message
from sightd.publishers.events import UNKNOWN
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
            body = decode_message(self._sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return
        if body is None:
            return
        kind = body["kind"]
        body["received_at"] = time.time()
        if kind == "event":
            self.heard.events.append(body)
        elif kind == "label":
            self.heard.labels.append(body)
            if self.first_label_at is None:
                self.first_label_at = time.monotonic()
                self.on_first_label()


@dataclass(frozen=True)
class Segment:
    """A stretch of the video, in its frame numbers: on screen from `first` to `last`
    (inclusive; a cross-fade overlaps its neighbours), fully visible from `visible`."""

    label: str | None  # None: no class on screen (an empty desk)
    first: int
    visible: int
    last: int


def card_segments(order: list[str], frames_per_card: int) -> list[Segment]:
    """Cards cut one to the next (the demo's video): each on screen for its own frames only."""
    return [
        Segment(label, i * frames_per_card, i * frames_per_card, (i + 1) * frames_per_card - 1)
        for i, label in enumerate(order)
    ]


@dataclass
class Score:
    cards: int  # segments with a class shown entirely while the pipeline was up
    announced: int  # of those, announced by an event naming their class
    wrong_events: int
    latencies_ms: list[float]  # capture to arrival here, per label
    unknown_events: int = 0
    empty: int = 0  # segments with no class shown entirely while the pipeline was up
    event_latencies_s: list[float] = field(default_factory=list)  # per announced segment
    wrong: list[dict] = field(default_factory=list)  # each wrong event, with what was shown
    missed: list[dict] = field(default_factory=list)  # each segment never announced

    @property
    def accuracy(self) -> float:
        return self.announced / self.cards if self.cards else 0.0

    def summary(self) -> str:
        if not self.latencies_ms:
            return "no labels arrived: the pipeline never came up (see the log above)"
        p50, p99 = np.percentile(self.latencies_ms, [50, 99])
        return (
            f"event accuracy {self.accuracy:.0%} ({self.announced} of {self.cards} cards "
            f"announced in order, {self.wrong_events} wrong events, {self.unknown_events} to "
            f"unknown); latency capture to subscriber p50 {p50:.0f} ms, p99 {p99:.0f} ms over "
            f"{len(self.latencies_ms)} labels"
        )


def score(heard: Heard, order: list[str], frames_per_card: int) -> Score:
    """The demo's cards, judged by the rules above."""
    return judge(heard, card_segments(order, frames_per_card), len(order) * frames_per_card)


def judge(
    heard: Heard, segments: list[Segment], video_frames: int, quiet=frozenset({UNKNOWN})
) -> Score:
    """Every event and every whole segment of a video of `video_frames` frames that loops.
    Events to a `quiet` label (unknown, or a class meaning "nothing") are never wrong."""
    latencies = [1000 * (b["received_at"] - b["captured_at"]) for b in heard.labels]
    result = Score(0, 0, 0, latencies)
    if not heard.labels:
        result.wrong_events = sum(e["label"] not in quiet for e in heard.events)
        return result
    for event in heard.events:
        _judge_event(result, event, segments, event["seq"] % video_frames, quiet)
    first = min(b["seq"] for b in heard.labels)
    last = max(b["seq"] for b in heard.labels)
    captured = _capture_clock(heard.labels)
    for start in range(first - first % video_frames, last + 1, video_frames):  # each pass
        for segment in segments:
            if start + segment.first >= first and start + segment.last <= last:
                _judge_segment(result, heard, segment, start, captured)
    return result


def _judge_event(result: Score, event: dict, segments: list[Segment], frame: int, quiet) -> None:
    shown = [s for s in segments if s.first <= frame <= s.last]
    if event["label"] in quiet:
        result.unknown_events += 1
    elif event["label"] not in {s.label for s in shown}:
        result.wrong_events += 1
        result.wrong.append(
            {
                "seq": event["seq"],
                "label": event["label"],
                "confidence": round(event["confidence"], 3),
                "frames": event.get("frames"),
                "previous": event["previous"],
                "shown": [s.label for s in shown],  # None: an empty desk
                "in_fade": len(shown) > 1,
            }
        )


def _judge_segment(result: Score, heard: Heard, segment: Segment, start: int, captured) -> None:
    if segment.label is None:
        result.empty += 1
        return
    result.cards += 1
    span = range(start + segment.first, start + segment.last + 1)
    hits = [e for e in heard.events if e["seq"] in span and e["label"] == segment.label]
    if not hits:
        seen = Counter(b["label"] for b in heard.labels if b["seq"] in span)
        result.missed.append({"label": segment.label, "first_seq": span.start, "labels": seen})
        return
    result.announced += 1
    result.event_latencies_s.append(hits[0]["received_at"] - captured(start + segment.visible))


def _capture_clock(labels: list[dict]):
    """seq -> captured_at, read off the labelled frames (interpolated for skipped ones)."""
    pairs = sorted((b["seq"], b["captured_at"]) for b in labels)
    seqs, times = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return lambda seq: float(np.interp(seq, seqs, times))
