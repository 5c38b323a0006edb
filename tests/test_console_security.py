"""The console's security: who gets in, what a browser on another site cannot make it do.

Real uvicorn servers on 127.0.0.1 answer real HTTP requests (httpx). A non-loopback listen
address is never bound here: the policy that refuses one is a pure function, tested with a
documentation address (192.0.2.10), and both commands are shown to stop before binding.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import yaml
from click.testing import CliRunner
from conftest import free_port, wait_for
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sightd.cli import main
from sightd.config import HttpConfig, SightdConfig
from sightd.errors import SightdError
from sightd.web.console import console_routes
from sightd.web.hub import Hub
from sightd.web.metrics import BusState
from sightd.web.relay import Relay
from sightd.web.security import console_token, console_url, is_loopback
from sightd.web.server import HttpServer, bind_listen, create_app

TOKEN = "a-test-token-0123456789"


async def poke(request):  # stands in for the console's POST routes (Grad-CAM, Teach)
    return PlainTextResponse("changed")


@contextlib.contextmanager
def served(token: str | None = None, config: SightdConfig | None = None) -> Iterator[str]:
    """A real server with the console's routes and a POST route; yields its URL."""
    config = config or SightdConfig()
    hub = Hub([c.name for c in config.cameras], 0.5)
    routes = [
        *console_routes(config, hub, Relay(config)),
        Route("/api/poke", poke, methods=["POST"]),
    ]
    port = free_port()
    server = HttpServer(create_app(BusState(0.5), routes, token), bind_listen(f"127.0.0.1:{port}"))
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), 10, "the server")
        yield url
    finally:
        server.stop()


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503)
    return False


# ---- the policy --------------------------------------------------------------------------------


@pytest.mark.parametrize("listen", ["127.0.0.1:8765", "127.0.0.2:80", "[::1]:8765", "localhost:9"])
def test_loopback_needs_no_token(listen):
    assert console_token(HttpConfig(listen=listen), environ={}) is None


@pytest.mark.parametrize("listen", ["192.0.2.10:8765", "0.0.0.0:8765", "[::]:8765", "cam.lan:80"])
def test_any_other_address_without_token_env_is_refused_in_one_line(listen):
    with pytest.raises(SightdError) as error:
        console_token(HttpConfig(listen=listen), environ={})
    assert "http.token_env" in str(error.value) and "\n" not in str(error.value)


def test_token_env_must_name_a_set_and_long_enough_variable():
    http = HttpConfig(listen="192.0.2.10:8765", token_env="SIGHTD_TOKEN")
    with pytest.raises(SightdError, match="SIGHTD_TOKEN, which is not set"):
        console_token(http, environ={})
    with pytest.raises(SightdError, match="under 16 characters"):
        console_token(http, environ={"SIGHTD_TOKEN": "short"})
    assert console_token(http, environ={"SIGHTD_TOKEN": TOKEN}) == TOKEN


def test_loopback_and_the_url_a_browser_opens():
    assert is_loopback("127.5.0.1") and is_loopback("[::1]") and not is_loopback("0.0.0.0")
    assert console_url("0.0.0.0:8765") == "http://127.0.0.1:8765/"
    assert console_url("[::]:8765") == "http://[::1]:8765/"
    assert console_url("127.0.0.1:8765") == "http://127.0.0.1:8765/"


def _network_config(tmp_path, port: int) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"http": {"listen": f"0.0.0.0:{port}"}}))
    return str(path)


def test_sightd_web_refuses_a_network_address_without_a_token_before_binding(tmp_path):
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "sightd", "web", "-c", _network_config(tmp_path, port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "http.token_env" in lines[0], done.stderr
    with pytest.raises(httpx.ConnectError):  # nothing listens there
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_sightd_run_refuses_it_too(tmp_path):
    result = CliRunner().invoke(main, ["run", "-c", _network_config(tmp_path, free_port())])
    assert result.exit_code == 1
    assert result.output.startswith("Error: http.listen 0.0.0.0:"), result.output


# ---- with a token ------------------------------------------------------------------------------


def test_with_a_token_a_request_without_it_is_401_and_with_it_200():
    with served(TOKEN) as url:
        assert httpx.get(f"{url}/api/state").status_code == 401
        assert httpx.get(f"{url}/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.get(f"{url}/api/state", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["cameras"] == ["cam0"]


def test_opening_the_page_with_the_token_sets_a_strict_cookie_and_drops_it_from_the_url():
    with served(TOKEN) as url, httpx.Client(base_url=url) as client:
        assert client.get("/?token=wrong").status_code == 401
        login = client.get(f"/?token={TOKEN}")
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert cookie.startswith(f"sightd_token={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        # then the browser's next requests carry the cookie, and need nothing else
        page = client.get("/")
        assert page.status_code == 200 and "<title>sightd console</title>" in page.text
        assert client.get("/api/state").status_code == 200


def test_health_and_metrics_stay_open_to_this_machine():
    with served(TOKEN) as url:
        assert httpx.get(f"{url}/healthz").status_code in (200, 503)
        assert httpx.get(f"{url}/metrics").status_code == 200
        assert httpx.get(f"{url}/api/state").status_code == 401


# ---- what another site's page cannot do --------------------------------------------------------


def test_a_cross_origin_post_is_refused():
    csrf = {"X-Sightd-CSRF": "1"}
    with served() as url:
        evil = httpx.post(f"{url}/api/poke", headers={**csrf, "Origin": "http://evil.example"})
        assert evil.status_code == 403
        referer = {**csrf, "Referer": "http://evil.example/page"}
        assert httpx.post(f"{url}/api/poke", headers=referer).status_code == 403
        port_differs = {**csrf, "Origin": url.rsplit(":", 1)[0] + ":1"}
        assert httpx.post(f"{url}/api/poke", headers=port_differs).status_code == 403
        # the console's own page, and a script (no Origin), pass
        same = httpx.post(f"{url}/api/poke", headers={**csrf, "Origin": url})
        assert same.status_code == 200 and same.text == "changed"
        assert httpx.post(f"{url}/api/poke", headers=csrf).status_code == 200


def test_a_post_without_the_csrf_header_is_refused_even_with_the_token():
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with served(TOKEN) as url:
        assert httpx.post(f"{url}/api/poke", headers=bearer).status_code == 403
        wrong = {**bearer, "X-Sightd-CSRF": "0"}
        assert httpx.post(f"{url}/api/poke", headers=wrong).status_code == 403
        right = {**bearer, "X-Sightd-CSRF": "1"}
        assert httpx.post(f"{url}/api/poke", headers=right).status_code == 200
        assert httpx.delete(f"{url}/api/poke", headers=bearer).status_code == 403


def test_a_page_whose_name_points_at_loopback_is_refused():
    # DNS rebinding: evil.example re-pointed at 127.0.0.1 would be same-origin with us
    with served() as url:
        rebound = httpx.get(f"{url}/api/state", headers={"Host": "evil.example:8765"})
        assert rebound.status_code == 403
        assert httpx.get(f"{url}/api/state", headers={"Host": "localhost"}).status_code == 200


def test_every_answer_forbids_framing_sniffing_and_foreign_scripts():
    with served() as url:
        headers = httpx.get(f"{url}/").headers
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in headers["content-security-policy"]


def test_snapshot_names_cannot_leave_the_snapshot_folder(tmp_path):
    snapshots = tmp_path / "snaps"
    snapshots.mkdir()
    (snapshots / "cam0-20260101T000000-7.jpg").write_bytes(b"\xff\xd8jpeg")
    (snapshots / ".hidden.jpg").write_bytes(b"secret")
    (tmp_path / "secret.jpg").write_bytes(b"secret")
    config = SightdConfig.model_validate({"events": {"snapshots": {"dir": str(snapshots)}}})
    with served(config=config) as url:
        good = httpx.get(f"{url}/snapshots/cam0-20260101T000000-7.jpg")
        assert good.status_code == 200 and good.content == b"\xff\xd8jpeg"
        assert good.headers["content-type"] == "image/jpeg"
        for name in ("..%2Fsecret.jpg", "%2E%2E%2Fsecret.jpg", ".hidden.jpg", "x.png", "nope.jpg"):
            assert httpx.get(f"{url}/snapshots/{name}").status_code == 404, name
