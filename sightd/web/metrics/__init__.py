"""What /metrics and /healthz say about the pipeline: state.py folds the bus's messages into
a BusState, render.py renders it for Prometheus, health.py judges it for /healthz."""

from sightd.web.metrics.health import health
from sightd.web.metrics.render import StateCollector, registry_for
from sightd.web.metrics.state import BUCKETS, OTHER, UNKNOWN, BusState, count, text

__all__ = [
    "BUCKETS",
    "OTHER",
    "UNKNOWN",
    "BusState",
    "StateCollector",
    "count",
    "health",
    "registry_for",
    "text",
]
