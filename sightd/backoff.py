"""Waiting between attempts, and holding back repeats: the two ways sightd paces itself.

A source that will not open, a child that keeps crashing and a webhook that keeps failing are
all retried after a delay that doubles up to a ceiling; an action for the same label is held
back for a while after it last ran.
"""

from __future__ import annotations

import time


class Backoff:
    """Delays between attempts: `first` doubling to `maximum`, back to `first` after a success."""

    def __init__(self, first: float, maximum: float):
        self.first, self.maximum = first, max(first, maximum)
        self.delay = 0.0  # the delay after the latest failure; 0 before any
        self.retry_at = 0.0

    def failed(self) -> float:
        """Note a failure; the delay until the next attempt."""
        self.delay = self.first if self.delay == 0 else min(self.delay * 2, self.maximum)
        self.retry_at = time.monotonic() + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0

    def remaining(self) -> float:
        """Seconds until the next attempt is due (0 when it is)."""
        return max(0.0, self.retry_at - time.monotonic())

    def delays(self, attempts: int) -> list[float]:
        """The delays before each retry of `attempts` in a row, for a caller that sleeps."""
        return [min(self.first * 2**i, self.maximum) for i in range(attempts)]


class Cooldown:
    """Lets each key through at most once per `seconds` (per label: one action per wave)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        """True, and the clock restarts for `key`, when `key` may go now."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.seconds:
            return False
        self._last[key] = now
        return True
