"""A named worker (`workers:` in the config): the inference worker, narrowed to its cameras.

Each named worker is its own supervised child, infer:<name>. It classifies only its cameras
and publishes into the labels proxy (transport.labels_in) instead of binding
transport.labels, so that every worker's labels and events reach subscribers as one stream
and one worker's death leaves the others' cameras labelling.
"""

from __future__ import annotations

from sightd.config import SightdConfig
from sightd.process import Runtime


def worker_config(config: SightdConfig, name: str) -> SightdConfig:
    """The config as worker `name` sees it: its cameras only, each endpoint pinned where the
    whole config puts it (a derived endpoint depends on the camera's place in the list)."""
    worker = next(w for w in config.workers if w.name == name)
    cameras = [
        camera.model_copy(update={"endpoint": config.camera_endpoint(camera.name)})
        for camera in config.cameras
        if camera.name in worker.cameras
    ]
    return config.model_copy(update={"cameras": cameras, "workers": [worker]})


def run_worker(config: SightdConfig, name: str, runtime: Runtime) -> None:
    """The supervisor's entry point for infer:<name>: classify its cameras until stopped."""
    from sightd.publishers.inference import Worker

    Worker(worker_config(config, name), runtime, name=f"infer:{name}", via_proxy=True).run()
