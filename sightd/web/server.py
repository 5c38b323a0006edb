"""The HTTP server of `sightd run` and `sightd web`: the console, /metrics and /healthz.

It runs as the supervised child "http" (or alone, `sightd web`). Its main thread reads the bus
into a BusState (metrics, health) and a Hub (the console's live view) and beats; uvicorn serves
in a second thread, from a socket bound before anything starts, so a taken port is a one-line
error naming the address. Every request passes security.py's policy first. The Explain and
Teach pages come in as routes of their own modules when those are installed.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence

import uvicorn
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sightd.component import Component
from sightd.config import SightdConfig, split_listen
from sightd.errors import SightdError
from sightd.process import Runtime
from sightd.web.bus import BusReader
from sightd.web.hub import Hub
from sightd.web.metrics import BusState, health, registry_for
from sightd.web.relay import Relay
from sightd.web.security import SecurityMiddleware, console_token, console_url, is_loopback

log = logging.getLogger("sightd.http")

POLL_S = 0.25  # longest wait for the bus: the heartbeat and stop stay prompt
STOP_S = 2.0  # at most this long to close connections on stop


def create_app(
    state: BusState,
    routes: Sequence[BaseRoute] = (),
    token: str | None = None,
    loopback_listen: bool = True,
) -> Starlette:
    """/metrics and /healthz over `state`, plus `routes`, behind the security policy (a
    `token`, when given, is asked of every request; see sightd.web.security)."""
    registry = registry_for(state)

    async def metrics(request: Request) -> Response:
        # the text format, or OpenMetrics when the scraper asks for it
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), headers={"Content-Type": content_type})

    async def healthz(request: Request) -> JSONResponse:
        healthy, report = health(state)
        return JSONResponse(report, status_code=200 if healthy else 503)

    security = Middleware(SecurityMiddleware, token=token, loopback_listen=loopback_listen)
    return Starlette(
        routes=[Route("/metrics", metrics), Route("/healthz", healthz), *routes],
        middleware=[security],
    )


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
    """Serve the console, /metrics and /healthz on http.listen until runtime.stop is set."""
    HttpComponent(config, runtime).run()


def extra_routes(
    config: SightdConfig, stopping: threading.Event | None = None
) -> dict[str, list[BaseRoute]]:
    """The Explain and Teach pages' routes, from their own modules; `stopping` ends their
    streams when the server stops."""
    from sightd.web.explain_routes import explain_routes
    from sightd.web.teach import teach_routes

    return {"explain": list(explain_routes(config)), "teach": list(teach_routes(config, stopping))}


class HttpComponent(Component):
    """The bus reader in the main loop, uvicorn in its own thread."""

    def __init__(self, config: SightdConfig, runtime: Runtime):
        super().__init__(runtime.name, config.transport, runtime)
        self.listen = config.http.listen
        token = console_token(config.http)  # before the bind: no server without its token
        sock = bind_listen(self.listen)
        state = state_for(config, runtime.name)
        cameras = [camera.name for camera in config.cameras]
        self.hub = Hub(cameras, config.transport.status_interval, config.model.path)
        self.relay = Relay(config)
        self.stopping = threading.Event()
        routes: list[BaseRoute] = []
        if config.http.console:
            from sightd.web.console import console_routes

            extras = extra_routes(config, self.stopping)
            self.hub.features = {name: True for name in extras}
            routes = [*console_routes(config, self.hub, self.relay)]
            routes += [route for found in extras.values() for route in found]
        host = split_listen(self.listen)[0]
        app = create_app(state, routes, token, loopback_listen=is_loopback(host))
        self.server = HttpServer(app, sock, config.log_level)
        sinks = (state, self.hub) if config.http.console else (state,)
        self.reader = BusReader(config, *sinks)
        self.server.start()
        self.set_state("online")
        url = console_url(self.listen)
        if config.http.console:
            login = f" (open {url}?token=... once: the token in ${config.http.token_env})"
            log.info("console: %s%s", url, login if token else "")
        log.info("http: serving %smetrics and /healthz", url)

    def cycle(self, wait: float) -> None:
        self.reader.poll(min(wait, POLL_S))
        if not self.server.alive:
            raise RuntimeError(f"the HTTP server on {self.listen} stopped: {self.server.error!r}")

    def figures(self) -> dict:
        return {
            "listen": self.listen,
            "requests": self.server.requests,
            **self.hub.figures(),
            **self.relay.figures(),
        }

    def close(self) -> None:
        self.hub.close()  # the streams end, so uvicorn's shutdown need not wait them out
        self.stopping.set()  # ... the Teach page's too
        self.relay.close()
        self.server.stop()
        self.reader.close()
