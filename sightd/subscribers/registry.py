"""Subscriber types by name: the built-ins, then plugins from the `sightd.subscribers` group.

Modules load only when their type is used, so validating a webhook never imports paho.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sightd.config import SightdConfig, validate
from sightd.plugins import Registry
from sightd.subscribers.base import Subscriber, SubscriberConfig

ENTRY_POINT_GROUP = "sightd.subscribers"
BUILTINS = {
    "print": "sightd.subscribers.printer:PrintSubscriber",
    "log": "sightd.subscribers.jsonlog:LogSubscriber",
    "command": "sightd.subscribers.command:CommandSubscriber",
    "webhook": "sightd.subscribers.webhook:WebhookSubscriber",
    "mqtt": "sightd.subscribers.mqtt:MqttSubscriber",
}
REGISTRY = Registry(ENTRY_POINT_GROUP, BUILTINS, Subscriber, "subscriber type", "types")


def plugin_targets() -> dict[str, str]:
    """Installed third-party types -> "module:Class"; a built-in name cannot be taken."""
    return REGISTRY.plugins()


def known_types() -> list[str]:
    return REGISTRY.names()


def subscriber_class(type_name: str, where: str = "type") -> type[Subscriber]:
    """The class registered as `type_name`; a one-line SightdError names the known ones."""
    return REGISTRY.load(type_name, where)


def parse_entry(data: dict[str, Any], source: str = "", prefix: str = "") -> SubscriberConfig:
    """Validate one subscriber entry with its type's own Config (errors name `prefix`)."""
    where = f"{source}: " if source else ""
    type_path = f"{prefix}.type" if prefix else "type"
    cls = subscriber_class(str(data.get("type")), f"{where}{type_path}")
    return validate(cls.Config, data, source=source, prefix=prefix)


def validate_subscribers(config: SightdConfig, source: str = "") -> list[SubscriberConfig]:
    """Check every configured subscriber now, so a typo stops sightd before anything starts."""
    return [
        parse_entry(entry.model_dump(), source, f"subscribers[{index}]")
        for index, entry in enumerate(config.subscribers)
    ]


def subscriber_name(config: SightdConfig, index: int) -> str:
    """`subscriber:<type>`, plus `.<index>` when the type is configured more than once."""
    types = Counter(entry.type for entry in config.subscribers)
    kind = config.subscribers[index].type
    return f"subscriber:{kind}" + (f".{index}" if types[kind] > 1 else "")
