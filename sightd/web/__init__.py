"""sightd's HTTP server: /metrics (Prometheus) and /healthz, from what the message bus carries.

metrics.py folds the bus's status, label and event messages into counters, histograms and a
health verdict; bus.py reads them; server.py serves them (starlette on uvicorn) as the
supervised child "http" of `sightd run`.
"""
