"""`sightd web`: the HTTP server of `sightd run` (console, /metrics, /healthz) run alone.

Module-level imports stay light (no torch, no uvicorn): `sightd --help` must stay instant.
"""

from __future__ import annotations

import click

from sightd.cli_options import config_option


@click.command("web")
@config_option
def web(config_path: str | None) -> None:
    """Serve the browser console, /metrics and /healthz on http.listen until Ctrl-C.

    The same server `sightd run` starts as its child "http", for a pipeline started otherwise
    (parts run alone, or `sightd run` with http.enabled: false). It hosts the status bus when
    nothing else does. On any address but loopback it needs http.token_env, the name of an
    environment variable holding a token; the page is then opened once as /?token=TOKEN.
    """
    from sightd.config import load_config
    from sightd.daemon.forwarder import foreground_status_bus
    from sightd.process import foreground_runtime
    from sightd.web.security import console_token
    from sightd.web.server import HttpComponent

    config = load_config(config_path)
    console_token(config.http)  # the one-line refusal comes before anything is bound
    runtime = foreground_runtime("http", config.log_level)
    with foreground_status_bus(config.transport):
        HttpComponent(config, runtime).run()  # it logs the console's URL
