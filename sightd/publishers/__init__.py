"""Processes that publish on the bus: capture (frames) and inference (labels, events)."""
