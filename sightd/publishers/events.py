"""From per-frame labels to trustworthy events: low confidence is "unknown", flicker is ignored."""

from __future__ import annotations

UNKNOWN = "unknown"


def decide_label(label: str, confidence: float, min_confidence: float) -> str:
    """The label to publish: the model's best guess only when it is confident enough."""
    return label if confidence >= min_confidence else UNKNOWN


class Debouncer:
    """One camera's stable label; a new label must hold `stable_frames` frames to replace it.

    The first stable label is reported as a change from None, so a subscriber that starts
    with the pipeline learns the initial state without waiting for the scene to change.
    """

    def __init__(self, stable_frames: int):
        self.stable_frames = stable_frames
        self.stable: str | None = None
        self._candidate: str | None = None
        self._count = 0

    def update(self, label: str) -> tuple[str | None, str] | None:
        """Feed one frame's label; returns (previous, new) when the stable label changes."""
        if label == self.stable:
            self._candidate, self._count = None, 0
            return None
        if label == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = label, 1
        if self._count < self.stable_frames:
            return None
        previous, self.stable = self.stable, label
        self._candidate, self._count = None, 0
        return previous, label
