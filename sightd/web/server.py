"""The HTTP server of `sightd run`: GET /metrics (Prometheus text) and GET /healthz (JSON).

It runs as the supervised child "http". Its main thread reads the bus into a BusState and beats;
uvicorn serves in a second thread, from a socket bound before anything starts, so a taken port
is a one-line error naming the address. More pages (a browser console) come in through
create_app's `routes`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Sequence

import uvicorn
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sightd.component import Component
from sightd.config import SightdConfig, split_listen
from sightd.errors import SightdError
from sightd.process import Runtime
from sightd.web.bus import BusReader
from sightd.web.metrics import BusState, registry_for

log = logging.getLogger("sightd.http")

POLL_S = 0.25  # longest wait for the bus: the heartbeat and stop stay prompt
STOP_S = 2.0  # at most this long to close connections on stop


def create_app(state: BusState, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """/metrics and /healthz over `state`, plus `routes`."""
    registry = registry_for(state)

    async def metrics(request: Request) -> Response:
        # the text format, or OpenMetrics when the scraper asks for it
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), headers={"Content-Type": content_type})

    async def healthz(request: Request) -> JSONResponse:
        healthy, report = state.health()
        return JSONResponse(report, status_code=200 if healthy else 503)

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz), *routes])


def bind_listen(listen: str) -> socket.socket:
    """A listening TCP socket on `listen` (host:port), or a SightdError saying what to do."""
    host, port = split_listen(listen)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise SightdError(
            f"cannot serve HTTP on {listen}: {exc.strerror or exc}; set http.listen in the "
            "config to an address of this machine, e.g. 127.0.0.1:8765"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may rebind now
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise SightdError(
            f"cannot serve HTTP on {listen}: {exc.strerror or exc}; is another sightd running, "
            "or is the port taken? Change http.listen in the config (or set http.enabled: false)"
        ) from None
    sock.setblocking(False)
    with contextlib.suppress(ValueError):
        if not ipaddress.ip_address(address[0]).is_loopback:
            log.warning("http: %s can be reached from the network; it asks for no login", listen)
    return sock


class HttpServer:
    """uvicorn serving `app` from `sock` in a thread of its own; stop() returns within ~2 s."""

    def __init__(self, app, sock: socket.socket, log_level: str = "info"):
        self.sock = sock
        # Through Python logging, as sightd's own lines; uvicorn's start-up and shutdown lines
        # are info, so they show only with log_level: debug, and there is no access log.
        quiet = logging.DEBUG if log_level == "debug" else logging.WARNING
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level=quiet,
            access_log=False,
            lifespan="off",
            ws="none",  # no websockets yet; the console may want them
            timeout_graceful_shutdown=STOP_S,
        )
        logging.getLogger("uvicorn").setLevel(quiet)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self.error: BaseException | None = None

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.sock])  # in this thread it installs no signal handler
        except BaseException as exc:  # uvicorn exits with SystemExit on a failed start
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    @property
    def requests(self) -> int:
        return self.server.server_state.total_requests

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(STOP_S + 1.0)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(1.0)
        self.sock.close()


def expected_components(config: SightdConfig, own: str) -> list[str]:
    """What `sightd run` starts (and so /healthz waits for), this server aside."""
    from sightd.daemon.supervisor import pipeline_specs  # the supervisor's own list

    return [*(spec.name for spec in pipeline_specs(config) if spec.name != own), "supervisor"]


def state_for(config: SightdConfig, own: str) -> BusState:
    return BusState(
        config.transport.status_interval,
        expected=expected_components(config, own),
        cameras=[camera.name for camera in config.cameras],
        own=own,
    )


def run_http(config: SightdConfig, runtime: Runtime) -> None:
    """Serve /metrics and /healthz on http.listen until runtime.stop is set."""
    HttpComponent(config, runtime).run()


class HttpComponent(Component):
    """The bus reader in the main loop, uvicorn in its own thread."""

    def __init__(self, config: SightdConfig, runtime: Runtime):
        super().__init__(runtime.name, config.transport, runtime)
        self.listen = config.http.listen
        sock = bind_listen(self.listen)
        state = state_for(config, runtime.name)
        self.server = HttpServer(create_app(state), sock, config.log_level)
        self.reader = BusReader(config, state)
        self.server.start()
        self.set_state("online")
        log.info("http: serving http://%s/metrics and /healthz", self.listen)

    def cycle(self, wait: float) -> None:
        self.reader.poll(min(wait, POLL_S))
        if not self.server.alive:
            raise RuntimeError(f"the HTTP server on {self.listen} stopped: {self.server.error!r}")

    def figures(self) -> dict:
        return {"listen": self.listen, "requests": self.server.requests}

    def close(self) -> None:
        self.server.stop()
        self.reader.close()
