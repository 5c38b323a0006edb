"""sightd: turn a camera into a stream of trustworthy label events."""

from sightd.cpu import configure_openmp

# Before anything imports torch: libgomp reads its environment once, when it is loaded.
configure_openmp()

__version__ = "0.1.0"
