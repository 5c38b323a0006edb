"""From per-frame labels to trustworthy events: low confidence is "unknown", flicker is ignored.

A camera's stable label changes only when a new label (`unknown` included) has been the label
of an unbroken run of frames that is long enough in frames (`stable_frames`) and in time
(`min_hold_s`, measured on the frames' captured_at), and, for a named label, confident enough
on average (`start_confidence`). Any other label arriving in between ends the run, and the
next run starts again from one frame: simple to reason about, and a flicker costs only delay.
Frames of the stable label itself end a run too, so a label never "wins" on frames interleaved
with the one it would replace.
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN = "unknown"


def decide_label(label: str, confidence: float, min_confidence: float) -> str:
    """The label to publish: the model's best guess only when it is confident enough."""
    return label if confidence >= min_confidence else UNKNOWN


@dataclass(frozen=True)
class Change:
    """A new stable label, and the run of frames that made it."""

    previous: str | None
    label: str
    confidence: float  # mean over the run (for unknown: of the best class, all too low)
    frames: int
    held_s: float  # captured_at of the run's last frame minus its first


@dataclass
class _Run:
    """The candidate: consecutive frames with one label."""

    label: str
    first_at: float
    last_at: float
    frames: int = 0
    confidence_sum: float = 0.0

    def add(self, confidence: float, captured_at: float) -> None:
        self.frames += 1
        self.confidence_sum += confidence
        self.last_at = captured_at

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.frames

    @property
    def held_s(self) -> float:
        return self.last_at - self.first_at


class Debouncer:
    """One camera's stable label (module docstring: the rules).

    Hysteresis: once stable, a label stays until another one qualifies by the same rules; a few
    frames of unknown or of another label in between only restart the candidate. The first
    stable label is reported as a change from None, so a subscriber that starts with the
    pipeline learns the initial state without waiting for the scene to change.
    """

    def __init__(self, stable_frames: int, min_hold_s: float, start_confidence: float):
        self.stable_frames = stable_frames
        self.min_hold_s = min_hold_s
        self.start_confidence = start_confidence
        self.stable: str | None = None
        self._run: _Run | None = None

    def update(self, label: str, confidence: float, captured_at: float) -> Change | None:
        """Feed one frame; returns the Change when the stable label changes."""
        if label == self.stable:
            self._run = None
            return None
        run = self._run
        # A clock that went back (NTP step, a restarted capture) would leave held_s negative
        # for as long as it went back by: start the run again rather than wait that long.
        if run is None or run.label != label or captured_at < run.last_at:
            run = self._run = _Run(label, captured_at, captured_at)
        run.add(confidence, captured_at)
        if not self._qualifies(run):
            return None
        self._run = None
        previous, self.stable = self.stable, label
        return Change(previous, label, run.mean_confidence, run.frames, run.held_s)

    def _qualifies(self, run: _Run) -> bool:
        if run.frames < self.stable_frames or run.held_s < self.min_hold_s:
            return False
        return run.label == UNKNOWN or run.mean_confidence >= self.start_confidence
