"""`sightd status`: listen to the status bus for a moment and summarise what was heard."""

from __future__ import annotations

import time

import click

from sightd.cli_options import config_option
from sightd.client import subscribe
from sightd.config import SightdConfig, load_config
from sightd.errors import SightdError


@click.command("status")
@config_option
@click.option(
    "--seconds",
    type=click.FloatRange(0.1, 60),
    default=None,
    help="How long to listen (default: 1.5 status intervals + 0.5 s).",
)
def status(config_path: str | None, seconds: float | None) -> None:
    """Show each component's state, fps, drops, latency and the label per camera.

    Every host's supervisor (`supervisor` on the hub, `supervisor:<share>` on the others) is
    one line with its roles and what it gave up on; a camera whose worker is down is named.
    """
    config = load_config(config_path)
    seconds = seconds or 1.5 * config.transport.status_interval + 0.5
    latest = read_status(config, seconds)
    if not latest:
        raise SightdError(
            f"no status heard in {seconds:g} s on {config.transport.status}; "
            "is `sightd run` running with this config?"
        )
    for line in format_status(latest):
        click.echo(line)


def read_status(config: SightdConfig, seconds: float) -> dict[str, dict]:
    """The latest status body of each component heard within about `seconds`."""
    latest: dict[str, dict] = {}
    deadline = time.monotonic() + seconds
    for message in subscribe("status", config=config, timeout=seconds):
        latest[message["topic"].partition(".")[2]] = message
        if time.monotonic() >= deadline:
            break
    return latest


def format_status(latest: dict[str, dict]) -> list[str]:
    """A table with one row per component (the children every supervisor reports included),
    then one line per supervisor (the hub's `supervisor`, other hosts' `supervisor:<share>`),
    the cameras a down worker leaves unlabelled, and the labels."""
    supervisors = {name: body for name, body in latest.items() if is_supervisor(name)}
    rows = {name: dict(body) for name, body in latest.items() if name not in supervisors}
    for supervisor in supervisors.values():
        for name, child in supervisor.get("children", {}).items():
            row = rows.setdefault(name, {})
            row["restarts"] = child.get("restarts", 0)
            if child.get("state") != "running":  # given up or waiting to restart: it cannot say
                row.update(state=child.get("state"), last_failure=child.get("last_failure"))
    header = f"{'component':<24} {'state':<10} {'fps':>6} {'dropped':>8} {'latency':>9}  notes"
    lines = [header] + [_row(name, rows[name]) for name in sorted(rows)]
    lines += [_supervisor_line(name, supervisors[name]) for name in sorted(supervisors)]
    for name in sorted(supervisors):
        for camera, why in sorted(supervisors[name].get("cameras_affected", {}).items()):
            lines.append(f"camera {camera} gets no labels: {why} (says {name})")
    labels = {cam: lab for body in latest.values() for cam, lab in body.get("labels", {}).items()}
    for camera, label in sorted(labels.items()):
        lines.append(f"label {camera}: {label if label is not None else '(none stable yet)'}")
    return lines


def is_supervisor(name: str) -> bool:
    """The hub's supervisor is `supervisor`; another host's names its share after a colon."""
    return name == "supervisor" or name.startswith("supervisor:")


def _supervisor_line(name: str, body: dict) -> str:
    state = f"{body.get('state')}: {body['reason']}" if body.get("reason") else body.get("state")
    given_up = ", ".join(body.get("given_up", [])) or "none"
    line = f"{name}: {state}, given up on: {given_up}"
    if body.get("roles"):
        line += f"; roles: {', '.join(body['roles'])}"
    return line


def _row(name: str, body: dict) -> str:
    notes = [f"{body['state']}: {body['reason']}"] if body.get("reason") else []
    if body.get("restarts"):
        notes.append(f"restarts {body['restarts']}")
    if body.get("last_failure"):
        notes.append(f"last failure: {body['last_failure']}")
    figures = (
        f"{_num(body.get('fps'), '{:.1f}'):>6} {_num(body.get('dropped'), '{:.0f}'):>8} "
        f"{_num(body.get('latency_ms'), '{:.0f} ms'):>9}"
    )
    return f"{name:<24} {str(body.get('state', '?')):<10} {figures}  {'; '.join(notes)}".rstrip()


def _num(value, pattern: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return pattern.format(value)
