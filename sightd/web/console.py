"""The console's routes: the page, its first paint, its live streams, the event snapshots.

GET /                      the page (static/console.html; the JS builds every element with
                           textContent, so nothing from the bus is ever parsed as HTML)
GET /static/...            its script and style (and the Teach page's), package data
GET /api/state             the hub's snapshot as JSON
GET /api/stream            server-sent events: label, event, status; `resync` after losses
GET /stream/{camera}.mjpg  the camera's frames as MJPEG (relay.py)
GET /snapshots/{name}      an event's snapshot from events.snapshots.dir
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from sightd.config import SightdConfig
from sightd.web.hub import Hub
from sightd.web.relay import CONTENT_TYPE, Relay

STATIC = Path(__file__).parent / "static"
KEEP_ALIVE_S = 15.0  # a comment line this often keeps proxies from closing a quiet stream
SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}\.jpg$")  # no dot first, no /
NO_STORE = {"Cache-Control": "no-store"}


def console_routes(config: SightdConfig, hub: Hub, relay: Relay) -> list[BaseRoute]:
    snapshots = config.events.snapshots
    snapshot_dir = Path(snapshots.dir).resolve() if snapshots is not None else None

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "console.html", headers=NO_STORE)

    async def state(request: Request) -> JSONResponse:
        return JSONResponse(hub.snapshot(), headers=NO_STORE)

    async def stream(request: Request) -> StreamingResponse:
        headers = {**NO_STORE, "X-Accel-Buffering": "no"}
        return StreamingResponse(_events(hub), media_type="text/event-stream", headers=headers)

    async def mjpeg(request: Request):
        feed = relay.feed(request.path_params["camera"])
        if feed is None:
            return PlainTextResponse("no such camera\n", status_code=404)
        return StreamingResponse(feed.stream(), media_type=CONTENT_TYPE, headers=NO_STORE)

    async def snapshot(request: Request):
        name = request.path_params["name"]
        if snapshot_dir is None or not SNAPSHOT_NAME.match(name):
            return PlainTextResponse("no such snapshot\n", status_code=404)
        path = snapshot_dir / name
        if not path.is_file():  # pruned since its event, or never written (the disk was slow)
            return PlainTextResponse("no such snapshot\n", status_code=404)
        return FileResponse(path, media_type="image/jpeg")

    return [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/stream", stream),
        Route("/stream/{camera}.mjpg", mjpeg),
        Route("/snapshots/{name}", snapshot),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


async def _events(hub: Hub):
    """One page's server-sent events, until it goes or the server stops."""
    subscriber = hub.subscribe(asyncio.get_running_loop())
    try:
        yield "retry: 2000\n\n"  # reconnect after 2 s when the stream breaks
        while True:
            try:
                message = await asyncio.wait_for(subscriber.queue.get(), KEEP_ALIVE_S)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if message is None:
                return
            if subscriber.behind:  # it lost messages: the page fetches /api/state again
                subscriber.behind = False
                yield f"event: resync\ndata: {subscriber.dropped}\n\n"
            yield message
    finally:
        hub.unsubscribe(subscriber)
