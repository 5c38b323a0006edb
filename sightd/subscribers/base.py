"""The subscriber contract: what a plugin (built-in or third-party) provides to sightd.

A subscriber is a class with a pydantic `Config` and a `handle(message)` method:

    from sightd.subscribers.base import Subscriber, SubscriberConfig

    class BeepConfig(SubscriberConfig):
        volume: int = 5

    class Beep(Subscriber):
        Config = BeepConfig
        default_topics = ("event",)

        def handle(self, message: dict) -> None:
            ...  # message["kind"] is "label", "event" or "status"

Third parties register it in their package metadata, and users configure it like a built-in:

    [project.entry-points."sightd.subscribers"]
    beep = "my_package:Beep"            # config.yaml: subscribers: [{type: beep, volume: 3}]

The host (host.py) runs each subscriber in its own process: it receives the messages named by
`topics`, keeps those `wants()` accepts, and calls `handle()` on a worker thread through a
bounded queue (oldest dropped when full). `handle()` may block for a while (retries, I/O) but
not past `handler_timeout`; an exception is logged and counted, and the next message is handled.

`unknown` never triggers an action by default. A subscriber class with `acts = True` (the
default: command, webhook, a plugin) is not given a label or event message whose label is
"unknown" unless its `labels` (command: `on`) names "unknown" (see `acts_on`). Subscribers
that only record (print, log) set `acts = False` and are given everything; so does one that
applies `acts_on()` itself to part of its work (mqtt: no event message for unknown, but its
retained state still says unknown).

Messages are the protocol bodies (sightd/protocol.py) plus "kind":
  label:  kind, camera, seq, captured_at, inferred_at, label, confidence, scores, model
  event:  kind, camera, type ("changed"), label, previous, confidence (the mean over the
          frames that made it), frames, held_s, at, seq
  status: kind, component, state, at, and figures (the worker's include labels: {camera: label})
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sightd.publishers.events import UNKNOWN

Topic = Literal["label", "event", "status"]


class SubscriberConfig(BaseModel):
    """Keys every subscriber entry accepts; a plugin's Config adds its own."""

    # strict + forbid: a misspelt key or "5" for a number is an error naming its YAML path.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)

    type: str = Field(description="which subscriber: a built-in name or a plugin's entry point")
    topics: list[Topic] | None = Field(
        None, min_length=1, description="label, event, status; default: the subscriber's own"
    )
    cameras: list[str] | None = Field(None, min_length=1, description="only these cameras")
    labels: list[str] | None = Field(None, min_length=1, description="only these labels")
    min_confidence: float = Field(0.0, ge=0, le=1, description="skip less confident messages")
    queue_size: int = Field(100, ge=1, le=100_000, description="waiting messages; oldest dropped")
    handler_timeout: float = Field(
        60.0, gt=0, le=3600, description="a handle() call running longer is a hang: restart"
    )

    @field_validator("cameras", "labels", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # `labels: thumbs_up` reads well


@dataclass(frozen=True)
class SubscriberContext:
    """What the host tells a subscriber about where it runs."""

    name: str  # "subscriber:mqtt": the status topic suffix and the process title
    cameras: tuple[str, ...] = ()  # the configured cameras (a message may name others)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("sightd.subscriber"))


class Subscriber:
    """Base class of every subscriber. Override `handle`; `start`/`close` are optional."""

    Config: ClassVar[type[SubscriberConfig]] = SubscriberConfig
    default_topics: ClassVar[tuple[Topic, ...]] = ("label", "event")
    # A minimal config entry (without `type`), shown by `sightd subscribe --help`.
    example: ClassVar[dict[str, Any]] = {}
    # It acts (runs, posts, switches) on what it is given: no unknown unless named (module doc).
    acts: ClassVar[bool] = True

    def __init__(self, config: SubscriberConfig, context: SubscriberContext):
        self.config = config
        self.context = context
        self.log = context.log

    @property
    def topics(self) -> tuple[Topic, ...]:
        return tuple(self.config.topics or self.default_topics)

    def start(self) -> None:
        """Open connections or files; raise SightdError for a setup the user must fix."""

    def wants(self, message: dict[str, Any]) -> bool:
        """The common filters; status messages carry no camera or label and always pass."""
        if message["kind"] not in self.topics:
            return False
        if message["kind"] == "status":
            return True
        cfg = self.config
        if cfg.cameras is not None and message.get("camera") not in cfg.cameras:
            return False
        if cfg.labels is not None and message.get("label") not in cfg.labels:
            return False
        if self.acts and not self.acts_on(message):
            return False
        return float(message.get("confidence", 0.0)) >= cfg.min_confidence

    def acts_on(self, message: dict[str, Any]) -> bool:
        """False for a label or event saying "unknown", unless `labels` names it: nothing was
        recognised, and an action must never fire on an unsure label."""
        if message.get("label") != UNKNOWN:
            return True
        return self.config.labels is not None and UNKNOWN in self.config.labels

    def handle(self, message: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement handle(message)")

    def state(self) -> str:
        """online, or reconnecting while an external service is unreachable."""
        return "online"

    def figures(self) -> dict[str, Any]:
        """Extra numbers for this subscriber's status message (runs, retries, ...)."""
        return {}

    def close(self) -> None:
        """Release what start() opened; must return within a few seconds."""
