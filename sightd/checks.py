"""`sightd check-config`: the schema, then what `sightd run` would refuse or trip on.

Each problem is one line naming the YAML path and what to do. Errors are what would stop the
pipeline (a model path that is a folder, a missing video file, image folder or CURVE key, a
source kind or option that does not validate, a subscriber entry that does not); warnings are
what it survives, retrying or waiting (an MQTT broker that does not answer now, a model not
trained yet).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click
import yaml

from sightd.cli_options import camera_option, config_option, role_option
from sightd.config import DEFAULT_CONFIG_PATH, SightdConfig, load_config
from sightd.daemon.roles import Plan, make_plan
from sightd.errors import SightdError
from sightd.sources import resolve
from sightd.subscribers.registry import parse_entry

BROKER_TIMEOUT = 1.0  # seconds for the TCP connect to an MQTT broker


@click.command("check-config")
@config_option
@role_option(
    "Check what this host's roles need, as `sightd run --role` (default: daemon.roles): "
    "the model for infer, camera sources for capture, subscribers, the console for web."
)
@camera_option("With --role capture: check only this camera's source (repeatable).")
def check_config(config_path: str | None, roles: tuple[str, ...], cameras: tuple[str, ...]):
    """Validate a config file and what it points at; print the effective configuration.

    Beyond the keys and types: each camera's kind and options, a missing video file or image
    folder, missing CURVE key files, an endpoint beyond loopback without transport.curve, an
    http.listen beyond loopback without http.token_env (errors), an MQTT broker that does not
    answer, a model file not trained yet (warnings). Each problem is one line on stderr; the exit
    status is 1 when there is an error (and then nothing is printed on stdout), 0 otherwise.
    """
    config = load_config(config_path)
    plan = make_plan(config, roles, cameras)
    problems = find_problems(config, str(config_path or DEFAULT_CONFIG_PATH), plan)
    errors = [p for p in problems if p.level == "error"]
    if not errors:
        click.echo(yaml.safe_dump(config.model_dump(), sort_keys=False), nl=False)
    for problem in problems:
        click.echo(str(problem), err=True)
    if errors:
        raise SystemExit(1)
    warnings = len(problems)
    noted = f" ({warnings} warning{'s' * (warnings != 1)})" if warnings else ""
    click.echo(f"# config OK{noted}", err=True)


@dataclass(frozen=True)
class Problem:
    level: Literal["error", "warning"]
    text: str  # "config.yaml: model.path: model file ... does not exist; train one ..."

    def __str__(self) -> str:
        return f"{self.level.capitalize()}: {self.text}"


def find_problems(
    config: SightdConfig, source: str = "", plan: Plan | None = None
) -> list[Problem]:
    """Every problem found for `plan`'s roles (default: all), errors and warnings, in the
    order of the config's sections. The transport's are every host's."""
    plan = plan or Plan()
    where = f"{source}: " if source else ""
    problems = _cameras(config, source, plan.cameras) if "capture" in plan.roles else []
    problems += _model(config, where) if "infer" in plan.roles else []
    problems += _curve(config, where, binds(config, plan)) + network_problems(config, where)
    problems += _http(config, where) if "web" in plan.roles else []
    return problems + (_subscribers(config, source) if "subscribers" in plan.roles else [])


def endpoints(config: SightdConfig) -> list[tuple[str, str]]:
    """(YAML path, endpoint) of every socket sightd binds or connects."""
    transport = config.transport
    named = ["frames", "labels", "status", "status_in"] + ["labels_in"] * bool(config.workers)
    found = [(f"transport.{n}", getattr(transport, n)) for n in named]
    for index, camera in enumerate(config.cameras):
        endpoint = config.camera_endpoint(camera.name)
        path = f"cameras[{index}].endpoint" if camera.endpoint else f"cameras[{index}] (derived)"
        found.append((path, endpoint))
    first = {}
    for path, endpoint in found:  # camera 0's derived endpoint is transport.frames: say it once
        first.setdefault(endpoint, path)
    return [(path, endpoint) for endpoint, path in first.items()]


def off_loopback(endpoint: str) -> bool:
    """True for an endpoint that other machines can reach: tcp:// (or pgm, udp...) with a host
    that is not 127.x, ::1 or localhost. ipc:// and inproc:// never leave the machine."""
    from sightd.web.security import is_loopback

    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return False
    host = rest.rpartition(":")[0].rpartition(";")[2]  # tcp://src;dst:port connects from src
    return not is_loopback(host)


def network_problems(config: SightdConfig, where: str = "") -> list[Problem]:
    """An endpoint beyond loopback without CURVE is an error: anyone on that network could read
    the frames and labels or publish their own. transport.insecure_network allows it."""
    transport = config.transport
    if transport.curve or transport.insecure_network:
        return []
    return [
        Problem(
            "error",
            f"{where}{path}: {endpoint} can be reached from other machines but transport.curve "
            "is false; set transport.curve: true (docs/security.md: `sightd keys generate`), or "
            "transport.insecure_network: true on a network you trust",
        )
        for path, endpoint in endpoints(config)
        if off_loopback(endpoint)
    ]


def refuse_insecure_network(config: SightdConfig, config_path: str | None) -> None:
    """Stop before anything binds when network_problems finds one: what `sightd run`,
    `sightd capture` and `sightd infer` all check (the first is enough; `sightd check-config`
    lists them all)."""
    insecure = network_problems(config, f"{config_path}: " if config_path else "")
    if insecure:
        raise SightdError(insecure[0].text)


def _http(config: SightdConfig, where: str) -> list[Problem]:
    """What the HTTP server would refuse at start: a network listen without its token."""
    from sightd.web.security import console_token

    if not config.http.enabled:
        return []
    try:
        console_token(config.http)
    except SightdError as exc:
        # No token_env at all is a config error; one unset here may be set for the service.
        level = "error" if config.http.token_env is None else "warning"
        return [Problem(level, f"{where}{exc}")]  # it names http.listen or http.token_env
    return []


def _model(config: SightdConfig, where: str) -> list[Problem]:
    from sightd.engines.base import not_installed

    problems = []
    path = Path(config.model.path)
    if path.is_dir():
        problems.append(
            Problem(
                "error",
                f"{where}model.path: model file {path} is a folder, not a model file; train "
                "one with `sightd train` or set model.path to a model.safetensors",
            )
        )
    elif not path.is_file():  # a first run: the worker waits for it, the console can train it
        problems.append(Problem("warning", f"{where}model.path: {waiting_for_model(path)}"))
    missing = not_installed(config.model.engine) if config.model.engine != "auto" else None
    if missing:
        problems.append(Problem("error", f"{where}model.engine: {missing}"))
    return problems


def waiting_for_model(path: Path) -> str:
    """What `sightd run` and `sightd check-config` say of a model file not there yet."""
    return (
        f"model file {path} does not exist yet; `sightd run` starts without it and its worker "
        "waits for it: train one in the console's Teach page or with `sightd train`, or set "
        "model.path to a model.safetensors"
    )


def _cameras(config: SightdConfig, source: str, only: tuple[str, ...] | None) -> list[Problem]:
    where = f"{source}: " if source else ""
    problems = []
    for index, camera in enumerate(config.cameras):
        if only is not None and camera.name not in only:
            continue
        prefix = f"cameras[{index}]"
        try:
            resolved = resolve(camera, source, prefix)
        except SightdError as exc:  # already one line naming the path
            problems.append(Problem("error", str(exc)))
            continue
        for message in resolved.cls.problems(camera, resolved.options):
            problems.append(Problem("error", f"{where}{prefix}.source: {message}"))
    return problems


def binds(config: SightdConfig, plan: Plan) -> bool:
    """Whether `plan`'s host binds a socket (and so serves CURVE): cameras bind their frames,
    the hub its buses, a lone worker transport.labels. Named workers only connect."""
    return "capture" in plan.roles or plan.hub or ("infer" in plan.roles and not config.workers)


def _curve(config: SightdConfig, where: str, server: bool = True) -> list[Problem]:
    transport = config.transport
    if not transport.curve:
        return []
    keys = Path(transport.keys_dir)
    hint = "create them with `sightd keys generate` or fix transport.keys_dir"
    secret = [("transport.keys_dir", keys / "server.key_secret", "the server's key pair")]
    needed = secret * server + [
        ("transport.keys_dir", keys / "server.key", "the server's public key"),
        (
            "transport.client_key",
            keys / f"{transport.client_key}.key_secret",
            "this host's client key pair",
        ),
    ]
    problems = []
    for path_in_yaml, path, what in needed:
        if not path.is_file():
            problems.append(
                Problem(
                    "error",
                    f"{where}{path_in_yaml}: CURVE key file {path} ({what}) is missing and "
                    f"transport.curve is on; {hint}",
                )
            )
    authorized = keys / "authorized"
    if server and not authorized.is_dir():
        problems.append(
            Problem(
                "error",
                f"{where}transport.keys_dir: CURVE folder {authorized} (the client keys servers "
                f"accept) is missing and transport.curve is on; {hint}",
            )
        )
    return problems


def _subscribers(config: SightdConfig, source: str) -> list[Problem]:
    where = f"{source}: " if source else ""
    problems = []
    for index, entry in enumerate(config.subscribers):
        prefix = f"subscribers[{index}]"
        try:
            parsed = parse_entry(entry.model_dump(), source, prefix)
        except SightdError as exc:
            problems.append(Problem("error", str(exc)))
            continue
        if entry.type == "mqtt":
            reason = unreachable(parsed.host, parsed.port, BROKER_TIMEOUT)
            if reason:
                problems.append(
                    Problem(
                        "warning",
                        f"{where}{prefix}.host: MQTT broker {parsed.host}:{parsed.port} does "
                        f"not answer ({reason}); start it or fix host and port (`sightd run` "
                        "starts anyway and keeps trying)",
                    )
                )
    return problems


def unreachable(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection to host:port fails within `timeout` seconds; None if it succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer in {timeout:g} s"
    except socket.gaierror as exc:
        return f"unknown host: {exc.strerror or exc}"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
