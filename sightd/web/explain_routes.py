"""The console's Grad-CAM button: POST /api/explain/{camera} -> the camera's newest frame with
the heat map of its label over it, as a PNG.

The frame is taken from the bus when asked for (a subscriber that lives for the request), so
the console holds no frame socket open while nobody explains. It is classified as the worker
classifies it (the camera's roi, the JPEG decoded at the model's scale) and drawn at full
size: the centre square of the roi, at most gradcam.MAX_SIDE. The Explainer, an eager copy of
config.model.path's network, is loaded on the first request (torch comes into the console's
process then, not before) and again after the file changes; it runs on the CPU, leaving the
worker's device and its memory to the worker, with model.threads CPU threads as the worker.

Responses: 200 image/png with X-Label (percent-encoded UTF-8), X-Confidence (calibrated) and
X-Seq (the frame's); otherwise JSON {"error": ...}: 404 unknown camera, 429 an explanation
is already running, 501 grad-cam missing, 503 no frame within FRAME_WAIT_S or no usable model.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sightd.config import SightdConfig
from sightd.errors import SightdError

FRAME_WAIT_S = 3.0  # a camera publishes at 2 fps by default; silence this long means it is down


def explain_routes(config: SightdConfig) -> list[Route]:
    cameras = {camera.name: camera for camera in config.cameras}
    explainers = ExplainerCache(config.model.path, config.model.threads)
    busy = threading.Lock()  # one explanation at a time: each takes a CPU core for a while

    async def explain_camera(request: Request) -> Response:
        name = request.path_params["camera"]
        if name not in cameras:
            return _error(404, f"no camera named {name!r} (cameras: {', '.join(cameras)})")
        if not busy.acquire(blocking=False):
            return _error(429, "an explanation is already running; try again when it is done")
        try:
            frame = await run_in_threadpool(newest_frame, config, name, FRAME_WAIT_S)
            if frame is None:
                return _error(503, f"no frame from camera {name} within {FRAME_WAIT_S:g} s")
            roi = cameras[name].roi
            result, png = await run_in_threadpool(explain_frame, explainers, frame, roi)
        except _Unavailable as exc:
            return _error(exc.status, str(exc))
        finally:
            busy.release()
        headers = {
            "X-Label": quote(result.label, safe=""),
            "X-Confidence": f"{result.confidence:.4f}",
            "X-Seq": str(frame["seq"]),
            "Cache-Control": "no-store",
        }
        return Response(png, media_type="image/png", headers=headers)

    return [Route("/api/explain/{camera}", explain_camera, methods=["POST"])]


class _Unavailable(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def newest_frame(config: SightdConfig, camera: str, wait: float) -> dict[str, Any] | None:
    """The first frame of `camera` published after now (its header and payload), or None."""
    from sightd.client import subscribe

    with contextlib.closing(subscribe("frame", camera, config=config, timeout=wait)) as frames:
        return next(frames, None)


def explain_frame(explainers: ExplainerCache, frame: dict[str, Any], roi):
    """(the frame's Explanation, its overlay as PNG): the network fed as the worker feeds it,
    the map drawn over the roi's centre square at full resolution."""
    from sightd.explain.gradcam import MAX_SIDE, encode_png
    from sightd.preprocessing import crop_roi, roi_min_side
    from sightd.protocol import ProtocolError, decode_image

    explainer = explainers.get()
    payload, size = frame["payload"], explainer.info.image_size
    try:
        network_image = crop_roi(decode_image(frame, payload, roi_min_side(size, roi)), roi)
        shown = crop_roi(decode_image(frame, payload, roi_min_side(MAX_SIDE, roi)), roi)
    except ProtocolError as exc:
        raise _Unavailable(503, f"the newest frame does not decode: {exc}") from None
    result = explainer.explain(shown, network_image=network_image)
    return result, encode_png(result.overlay_bgr)


class ExplainerCache:
    """The Explainer of the model file, reloaded when the file changes (mtime, size, inode)."""

    def __init__(self, path: str, threads: int = 0):
        self.path, self.threads = path, threads
        self.signature: tuple | None = None
        self.explainer = None
        self.lock = threading.Lock()

    def get(self):
        from sightd.explain.gradcam import Explainer, available
        from sightd.publishers.model_watcher import file_signature

        if not available():
            from sightd.explain.gradcam import INSTALL_HINT

            raise _Unavailable(501, INSTALL_HINT)
        with self.lock:
            signature = file_signature(self.path)
            if self.explainer is None or signature != self.signature:
                try:
                    self.explainer = Explainer(self.path, "cpu", self.threads)
                except SightdError as exc:  # missing, damaged: the message says which
                    raise _Unavailable(503, str(exc)) from None
                self.signature = signature
            return self.explainer


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
