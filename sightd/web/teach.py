"""The console's Teach page, Teachable Machine's loop against the running daemon: record a class
from a live camera, look through the data set and delete bad samples, train with the curve
drawn as it goes, and deploy the run the worker should serve.

teach_routes(config) is all a server needs: the page at /teach, its script and style, and the
JSON API under /api/teach. The work lives beside it: teach_data (the data set), teach_record,
teach_train and teach_runs (the runs, and deploy). Every POST changes something; the server's
security middleware asks each for the CSRF header and a matching Origin.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Callable
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from sightd.config import SightdConfig
from sightd.web.teach_data import MAX_CLASSES, MAX_FILES, MAX_PAGE, DataSet, TeachError
from sightd.web.teach_record import COUNT, COUNTDOWN_S, EVERY_S, Recorder
from sightd.web.teach_runs import Runs
from sightd.web.teach_train import Trainer, progress_events

STATIC = Path(__file__).parent / "static"
ASSETS = {"teach.js": "text/javascript", "teach.css": "text/css"}
MAX_BODY = 4096  # bytes of JSON a request may send: every body here is a few fields
NO_CACHE = {"Cache-Control": "no-cache"}  # a new sightd's page is never an old one


def teach_routes(config: SightdConfig, stopping: threading.Event | None = None) -> list[BaseRoute]:
    """`stopping`, set when the server stops, ends the training streams at once (uvicorn
    would otherwise wait its grace period for them)."""
    data = DataSet(config.train.data_dir)
    recorder, trainer, runs = Recorder(config, data), Trainer(config, data), Runs(config)

    def overview() -> dict:
        return {
            "cameras": [{"name": c.name, "roi": c.roi} for c in config.cameras],
            "data_dir": str(data.root),
            "out_dir": str(runs.out_dir),
            "model_path": str(runs.model_path),
            "reload": config.model.reload,
            "train": {"epochs": config.train.epochs, "arch": config.train.arch},
            "limits": {
                "classes": MAX_CLASSES,
                "files": MAX_FILES,
                "page": MAX_PAGE,
                "count": COUNT,
                "every_s": EVERY_S,
                "countdown_s": COUNTDOWN_S,
            },
        }

    def samples(name: str, query) -> dict:
        return data.samples(name, _int(query, "offset", 0), _int(query, "limit", 100))

    def thumb(name: str, file: str, headers) -> Response:
        jpeg, etag = data.thumbnail(name, file)
        cached = {"ETag": etag, **NO_CACHE}
        if headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=cached)
        return Response(jpeg, media_type="image/jpeg", headers=cached)

    def run_file(run: str, file: str) -> Response:
        path, media = runs.file(run, file)
        return FileResponse(path, media_type=media, headers=NO_CACHE)

    def delete(name: str, file: str) -> dict:
        return data.delete(name, file)

    async def train_stream(request: Request) -> StreamingResponse:
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        events = progress_events(trainer, stopping)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    post = {"methods": ["POST"], "body": True}
    return [
        Route("/teach", _page),
        Route("/teach/{asset}", _asset),
        _api("/api/teach", overview),
        _api("/api/teach/classes", lambda: {"classes": data.classes()}),
        _api("/api/teach/classes", lambda body: data.add(body.get("name", "")), **post),
        _api("/api/teach/classes/{name}/delete", data.remove_class, methods=["POST"]),
        _api("/api/teach/classes/{name}/samples", samples, query=True),
        _api("/api/teach/classes/{name}/samples/{file}/delete", delete, methods=["POST"]),
        _api("/api/teach/classes/{name}/samples/{file}", delete, methods=["DELETE"]),
        _api("/api/teach/thumb/{name}/{file}", thumb, headers=True),
        _api("/api/teach/record", recorder.state),
        _api("/api/teach/record", recorder.start, status=202, **post),
        _api("/api/teach/record/stop", recorder.stop, methods=["POST"]),
        _api("/api/teach/train", trainer.state),
        _api("/api/teach/train", trainer.start, status=202, **post),
        _api("/api/teach/train/stop", trainer.stop, methods=["POST"]),
        Route("/api/teach/train/stream", train_stream),
        _api("/api/teach/runs", lambda: {"runs": runs.list()}),
        _api("/api/teach/runs/{run}/{file}", run_file),
        _api("/api/teach/served", runs.served),
        _api("/api/teach/deploy", lambda body: runs.deploy(body.get("run", "")), **post),
    ]


def _api(
    path: str,
    handler: Callable,
    methods: list[str] | None = None,
    body: bool = False,
    query: bool = False,
    headers: bool = False,
    status: int = 200,
) -> Route:
    """A route calling handler(**path params [, body] [, query] [, headers]) in a worker
    thread (it touches the disk); a dict answer is JSON, a TeachError its status and message."""

    async def endpoint(request: Request) -> Response:
        kwargs = dict(request.path_params)
        try:
            if body:
                kwargs["body"] = await _json_body(request)
            if query:
                kwargs["query"] = request.query_params
            if headers:
                kwargs["headers"] = request.headers
            answer = await run_in_threadpool(handler, **kwargs)
        except TeachError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except OSError as exc:  # the disk said no: a full disk, permissions, a read-only mount
            return JSONResponse({"error": _disk_error(exc)}, status_code=500)
        if isinstance(answer, Response):
            return answer
        return JSONResponse(answer, status_code=status, headers=NO_CACHE)

    return Route(path, endpoint, methods=methods or ["GET"])


async def _json_body(request: Request) -> dict:
    """The request's JSON object, read no further than MAX_BODY bytes."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise TeachError(413, f"a request body here is at most {MAX_BODY} bytes")
    try:
        found = json.loads(raw or b"{}")
    except ValueError:
        raise TeachError(400, "the body must be JSON") from None
    if not isinstance(found, dict):
        raise TeachError(400, "the body must be a JSON object")
    return found


def _disk_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    hint = ""
    if exc.errno == errno.EROFS:  # a systemd unit older than this config's folders
        hint = (
            "; under systemd, the unit must name this folder in ReadWritePaths: write it "
            "again with `sightd service install`"
        )
    return f"{exc.strerror or exc}{where}{hint}"


def _int(query, key: str, default: int) -> int:
    text = query.get(key)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise TeachError(400, f"{key} must be a whole number") from None


async def _page(request: Request) -> Response:
    return FileResponse(STATIC / "teach.html", media_type="text/html", headers=NO_CACHE)


async def _asset(request: Request) -> Response:
    name = request.path_params["asset"]
    if name not in ASSETS:
        return Response("not found\n", status_code=404, media_type="text/plain")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=NO_CACHE)
