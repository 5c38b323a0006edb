"""Moved to sightd.sources (one module per kind); these names stay for the capture process."""

from sightd.sources import SourceEnded, SourceError, describe, open_source

__all__ = ["SourceEnded", "SourceError", "describe", "open_source"]
