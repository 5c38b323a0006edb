"""Subscriber types by name: the built-ins, then plugins from the `sightd.subscribers` group.

Modules load only when their type is used, so validating a webhook never imports paho.
"""

from __future__ import annotations

import importlib
import logging
from collections import Counter
from importlib.metadata import entry_points
from typing import Any

from sightd.config import SightdConfig, validate
from sightd.errors import SightdError
from sightd.subscribers.base import Subscriber, SubscriberConfig

ENTRY_POINT_GROUP = "sightd.subscribers"
BUILTINS = {
    "print": "sightd.subscribers.printer:PrintSubscriber",
    "log": "sightd.subscribers.jsonlog:LogSubscriber",
    "command": "sightd.subscribers.command:CommandSubscriber",
    "webhook": "sightd.subscribers.webhook:WebhookSubscriber",
    "mqtt": "sightd.subscribers.mqtt:MqttSubscriber",
}
log = logging.getLogger("sightd.subscribers")


def plugin_targets() -> dict[str, str]:
    """Installed third-party types -> "module:Class"; a built-in name cannot be taken."""
    targets = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTINS:
            log.warning("ignoring plugin %s (%s): %r is a built-in", ep.name, ep.value, ep.name)
            continue
        targets[ep.name] = ep.value
    return targets


def known_types() -> list[str]:
    return [*BUILTINS, *sorted(plugin_targets())]


def subscriber_class(type_name: str, where: str = "type") -> type[Subscriber]:
    """The class registered as `type_name`; a one-line SightdError names the known ones."""
    target = BUILTINS.get(type_name) or plugin_targets().get(type_name)
    if target is None:
        known = ", ".join(known_types())
        raise SightdError(
            f"{where}: unknown subscriber type {type_name!r}; known types: {known} "
            f"(plugins register in the {ENTRY_POINT_GROUP!r} entry-point group)"
        )
    module_name, _, attribute = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # a broken plugin must not take sightd down with a traceback
        raise SightdError(
            f"{where}: subscriber type {type_name!r} ({target}) failed to load: "
            f"{type(exc).__name__}: {exc}; reinstall or remove that plugin"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Subscriber)):
        raise SightdError(f"{where}: {target} is not a sightd.subscribers.base.Subscriber")
    return cls


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
