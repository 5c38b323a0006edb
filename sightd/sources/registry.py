"""Source kinds by name: the built-ins, then plugins from the `sightd.sources` group.

A camera's kind is `cameras[].kind` when given (a registered name or "module:Class"), else it
is told by `source` as it always was: a device index is a webcam, a URL a stream, a folder an
image folder, "synthetic" the test pattern, anything else a video file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from sightd.config import CameraConfig, SightdConfig, validate
from sightd.errors import SightdError
from sightd.plugins import Registry
from sightd.sources.base import Source, SourceOptions, granted, redact

ENTRY_POINT_GROUP = "sightd.sources"
BUILTINS = {  # also declared in pyproject.toml, as a plugin would declare its own
    "webcam": "sightd.sources.webcam:Webcam",
    "stream": "sightd.sources.stream:Stream",
    "file": "sightd.sources.file:VideoFile",
    "folder": "sightd.sources.folder:ImageFolder",
    "synthetic": "sightd.sources.synthetic:Synthetic",
}
REGISTRY = Registry(ENTRY_POINT_GROUP, BUILTINS, Source, "source kind", "kinds")


@dataclass(frozen=True)
class Resolved:
    """A camera's kind, its class and its validated options."""

    kind: str
    cls: type[Source]
    options: SourceOptions


def known_kinds() -> list[str]:
    return REGISTRY.names()


def sniff(source: int | str) -> str:
    """The built-in kind a bare `source` value stands for."""
    if isinstance(source, int) or source.isdigit() or source.startswith("/dev/video"):
        return "webcam"
    if source == "synthetic":
        return "synthetic"
    if "://" in source:
        return "stream"
    return "folder" if Path(source).expanduser().is_dir() else "file"


def kind_of(camera: CameraConfig) -> str:
    return camera.kind or sniff(camera.source)


@functools.lru_cache(maxsize=64)
def _kind_class(kind: str, where: str) -> type[Source]:
    # Cached: describe() runs at every status message, and looking up a plugin reads the
    # installed packages' metadata. Failures are not cached.
    return REGISTRY.load(kind, where, allow_targets=True)


def resolve(camera: CameraConfig, source: str = "", prefix: str = "") -> Resolved:
    """The camera's kind and options, validated; a one-line SightdError names the YAML path
    (`prefix`, e.g. "cameras[0]") and, for an unknown kind, the known ones."""
    prefix = prefix or f"camera {camera.name}"
    kind = kind_of(camera)
    where = f"{source}: " if source else ""
    key = "kind" if camera.kind else "source"
    cls = _kind_class(kind, f"{where}{prefix}.{key}")
    fields = ", ".join(cls.Options.model_fields) or "none"
    options = validate(
        cls.Options,
        camera.options,
        source=source,
        prefix=f"{prefix}.options",
        unknown_key=f"not an option of kind {kind!r} (its options: {fields})",
    )
    return Resolved(kind, cls, options)


def open_source(camera: CameraConfig) -> Source:
    """The frame source `camera` names, opened; raises SourceError if it cannot be opened
    (retried) and SightdError if its kind or options are wrong (not retried)."""
    resolved = resolve(camera)
    return resolved.cls(camera, resolved.options)


def describe(camera: CameraConfig) -> str:
    """The source as it may appear in logs and status: no passwords; once a live source has
    opened, with what it was granted ("0 (1280x720, 30 fps, MJPG)")."""
    try:
        resolved = resolve(camera)
        text = resolved.cls.describe(camera, resolved.options)
    except SightdError:
        text = redact(str(camera.source))
    extra = granted(camera)
    return f"{text} ({extra})" if extra else text


def with_source(camera: CameraConfig, source: int | str) -> CameraConfig:
    """The camera reading `source` instead (`sightd capture --source`): the kind is told by
    the new source, and the options stay only if they were for that kind."""
    kind = sniff(source)
    options = camera.options if kind_of(camera) == kind else {}
    return camera.model_copy(update={"source": source, "kind": None, "options": options})


def validate_cameras(config: SightdConfig, source: str = "") -> list[Resolved]:
    """Check every camera's kind and options now, so a typo stops sightd before it starts."""
    return [resolve(c, source, f"cameras[{i}]") for i, c in enumerate(config.cameras)]
