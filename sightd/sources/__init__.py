"""Camera sources: where a camera's pictures come from, one kind per module, one contract.

base.py is the contract a kind implements (a plugin too), registry.py finds a camera's kind
(built-ins, the `sightd.sources` entry-point group, or "module:Class") and validates its
options. Built-in kinds: webcam.py, stream.py (live, read by live.py's thread), file.py,
folder.py, synthetic.py (recorded: one frame per read).
"""

from sightd.sources.base import Frame, Source, SourceEnded, SourceError, SourceOptions
from sightd.sources.registry import (
    Resolved,
    describe,
    known_kinds,
    open_source,
    resolve,
    validate_cameras,
    with_source,
)

__all__ = [
    "Frame",
    "Resolved",
    "Source",
    "SourceEnded",
    "SourceError",
    "SourceOptions",
    "describe",
    "known_kinds",
    "open_source",
    "resolve",
    "validate_cameras",
    "with_source",
]
