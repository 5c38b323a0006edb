"""The one loader of plugins: "module:attr" targets and named entry points.

Every pluggable thing in sightd goes through here: subscriber types (`sightd.subscribers`),
camera source kinds (`sightd.sources`), the CLI's lazily imported commands and the
supervisor's child targets. A target that does not load is a one-line PluginError (a
SightdError) naming the target, its module and the exception, never a traceback or a silent
"not found".
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from sightd.errors import SightdError

log = logging.getLogger("sightd.plugins")


class PluginError(SightdError):
    """A target that is malformed, does not import, lacks its attribute or is the wrong type."""


def is_target(text: str) -> bool:
    """True for "module:attr" (what `load` takes), False for a plain registered name."""
    module, sep, attribute = text.partition(":")
    return bool(sep and module and attribute)


def load(target: str, what: str = "plugin", instance_of: type | None = None) -> Any:
    """The object `target` ("package.module:attr", attr may be dotted) names.

    `what` says what it was meant to be ("subscriber type 'beep'", "command 'train'") and
    starts the error message, which names the module and the exception. With `instance_of`,
    the object must be an instance of that type.
    """
    if not is_target(target):
        raise PluginError(f"{what}: {target!r} is not a 'module:attribute' target")
    module_name, _, attribute = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # a broken plugin must not take sightd down with a traceback
        raise PluginError(
            f"{what} ({target}) failed to load: importing {module_name} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{what} ({target}): {module_name} has no {attribute!r}") from None
    if instance_of is not None and not isinstance(obj, instance_of):
        expected = f"{instance_of.__module__}.{instance_of.__qualname__}"
        raise PluginError(f"{what} ({target}) is not a {expected}")
    return obj


def load_class(target: str, base: type, what: str = "plugin") -> type:
    """`load`, and check that the object is a subclass of `base`."""
    cls = load(target, what)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        expected = f"{base.__module__}.{base.__qualname__}"
        raise PluginError(f"{what} ({target}) is not a subclass of {expected}")
    return cls


class Registry:
    """Named plugins of one kind: built-ins first, then the installed entry points of `group`.

    A plugin cannot take a built-in's name (it is ignored with a warning), unless it points at
    the built-in itself, as sightd's own package metadata does.
    """

    def __init__(self, group: str, builtins: dict[str, str], base: type, noun: str, plural: str):
        self.group, self.builtins, self.base = group, dict(builtins), base
        self.noun, self.plural = noun, plural  # "subscriber type", "types"

    def plugins(self) -> dict[str, str]:
        """Installed third-party names -> "module:attr"."""
        found = {}
        for ep in entry_points(group=self.group):
            if ep.name in self.builtins:
                if ep.value != self.builtins[ep.name]:
                    log.warning(
                        "ignoring plugin %s (%s): %r is a built-in %s",
                        ep.name,
                        ep.value,
                        ep.name,
                        self.noun,
                    )
                continue
            found[ep.name] = ep.value
        return found

    def targets(self) -> dict[str, str]:
        return {**self.builtins, **dict(sorted(self.plugins().items()))}

    def names(self) -> list[str]:
        return list(self.targets())

    def target(self, name: str) -> str | None:
        return self.builtins.get(name) or self.plugins().get(name)

    def load(self, name: str, where: str = "", allow_targets: bool = False) -> type:
        """The class registered as `name` (or, with allow_targets, a "module:Class" target);
        errors start with `where` (e.g. "config.yaml: cameras[0].kind") and list the names."""
        prefix = f"{where}: " if where else ""
        target = self.target(name)
        if target is None and allow_targets and is_target(name):
            target = name
        if target is None:
            known = ", ".join(self.names())
            also = " or a 'module:Class' target" if allow_targets else ""
            raise PluginError(
                f"{prefix}unknown {self.noun} {name!r}; known {self.plural}: {known}{also} "
                f"(plugins register in the {self.group!r} entry-point group)"
            )
        named = target != name
        try:
            return load_class(target, self.base, f"{self.noun} {name!r}" if named else self.noun)
        except PluginError as exc:
            hint = "reinstall or remove that plugin" if named else "check the module and name"
            raise PluginError(f"{prefix}{exc}; {hint}") from None
