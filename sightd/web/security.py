"""Who may use the HTTP server, and how a browser is kept from being used against it.

The policy, in the order the middleware applies it to every request (metrics included):

- On a loopback listen address the Host header must name loopback too (localhost, 127.x,
  [::1]): a web page whose own name was re-pointed at 127.0.0.1 (DNS rebinding) is refused.
- With a token (http.token_env; required for any listen address but loopback) every request
  needs `Authorization: Bearer <token>` or the `sightd_token` cookie, which opening
  `/?token=<token>` once sets (HttpOnly, SameSite=Strict) before redirecting to `/`. /healthz
  and /metrics stay open to clients on this machine, so local probes need no secret.
- A request that may change state (POST, PUT, PATCH, DELETE) needs `X-Sightd-CSRF: 1`, which
  no cross-site form can send and a cross-site script can send only after a preflight this
  server never grants, and an Origin (else Referer) naming this server when one is sent.

It is plain ASGI, not Starlette's BaseHTTPMiddleware, so streamed responses (MJPEG, server-sent
events) pass through unbuffered.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from sightd.config import HttpConfig, split_listen
from sightd.errors import SightdError

COOKIE = "sightd_token"
CSRF_HEADER = b"x-sightd-csrf"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
OPEN_LOCALLY = ("/healthz", "/metrics")  # to loopback clients, even with a token
MIN_TOKEN = 16  # characters: a guessable token over the network is no login
HEADERS = [  # on every answer: no framing, no sniffing, nothing loaded from elsewhere
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost; a name or wildcard (0.0.0.0, ::) is not."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def console_token(http: HttpConfig, environ: dict[str, str] | None = None) -> str | None:
    """The token requests must carry, None when none is asked; a SightdError (one line saying
    what to do) for a non-loopback listen without one, or a token_env that is unset or short."""
    environ = os.environ if environ is None else environ
    host, _ = split_listen(http.listen)
    if http.token_env is None:
        if is_loopback(host):
            return None
        raise SightdError(
            f"http.listen {http.listen} can be reached from the network, so the console needs "
            "a token: set http.token_env to the name of an environment variable holding one "
            "(e.g. SIGHTD_TOKEN, from `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
            ", or listen on 127.0.0.1"
        )
    token = environ.get(http.token_env, "")
    if len(token) < MIN_TOKEN:
        state = "is not set" if not token else f"holds under {MIN_TOKEN} characters"
        raise SightdError(
            f"http.token_env names {http.token_env}, which {state}; export "
            f"{http.token_env}=<token of {MIN_TOKEN}+ characters> or remove http.token_env"
        )
    return token


def console_url(listen: str) -> str:
    """Where a browser on this machine opens the console: a wildcard host becomes loopback."""
    host, port = split_listen(listen)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


class SecurityMiddleware:
    """The policy above around an ASGI app; `token` None asks for none."""

    def __init__(self, app, token: str | None, loopback_listen: bool):
        self.app, self.token, self.loopback_listen = app, token, loopback_listen

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope["headers"])
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            return await _answer(send, *refusal)
        if self.token is not None and scope["path"] == "/" and "token" in _query(scope):
            return await self._login(scope, send)

        async def secured(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        await self.app(scope, receive, secured)

    def _refusal(self, scope, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        host = headers.get(b"host", b"").decode("latin-1")
        if self.loopback_listen and not is_loopback(_hostname(host)):
            return 403, "this server answers only to a loopback Host (localhost, 127.0.0.1)"
        if self.token is not None and not self._authorised(scope, headers):
            return 401, "a token is needed: open /?token=<token> once, or send a bearer token"
        if scope["method"] in UNSAFE:
            if headers.get(CSRF_HEADER) != b"1":
                return 403, "a state-changing request needs the header X-Sightd-CSRF: 1"
            if not _same_origin(scope, headers, host):
                return 403, "cross-origin requests are refused"
        return None

    def _authorised(self, scope, headers: dict[bytes, bytes]) -> bool:
        client = scope.get("client") or ("", 0)
        if scope["path"] in OPEN_LOCALLY and is_loopback(client[0]):
            return True
        if scope["path"] == "/" and "token" in _query(scope):
            return True  # _login checks it
        bearer = headers.get(b"authorization", b"").decode("latin-1")
        if bearer[:7].lower() == "bearer " and self._matches(bearer[7:].strip()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:  # a malformed Cookie header is no login, not an error
            return False
        return COOKIE in cookie and self._matches(cookie[COOKIE].value)

    def _matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def _login(self, scope, send) -> None:
        given = _query(scope)["token"][0]
        if not self._matches(given):
            return await _answer(send, 401, "wrong token")
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict{secure}"
        headers = [
            (b"location", b"/"),
            (b"set-cookie", cookie.encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 303, "headers": headers + HEADERS})
        await send({"type": "http.response.body", "body": b""})


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in raw}


def _query(scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))


def _hostname(host: str) -> str:
    """The name of a Host header: "127.0.0.1" from "127.0.0.1:8765", "::1" from "[::1]:80"."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _same_origin(scope, headers: dict[bytes, bytes], host: str) -> bool:
    """No Origin and no Referer (a non-browser client) passes; one that is sent must be ours."""
    sent = headers.get(b"origin") or headers.get(b"referer")
    if sent is None:
        return True
    origin = urlsplit(sent.decode("latin-1"))
    own = f"{scope.get('scheme', 'http')}://{host}".lower()
    return f"{origin.scheme}://{origin.netloc}".lower() == own


async def _answer(send, status: int, text: str) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text.encode() + b"\n"})
