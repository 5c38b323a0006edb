"""sightd: turn a camera into a stream of trustworthy label events."""

__version__ = "0.1.0"
