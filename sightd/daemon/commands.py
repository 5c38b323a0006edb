"""CLI commands for running sightd as a whole: `run`, and `service` to run it under systemd.

Module-level imports stay light (no torch, no cv2): `sightd --help` must stay instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from sightd.cli_options import camera_option, config_option, role_option
from sightd.errors import SightdError


@click.command("run")
@config_option
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Override log_level from the config.",
)
@role_option(
    "Run only this part of the deployment (repeatable; default: daemon.roles, all; "
    "env SIGHTD_ROLE, space-separated). The host with subscribers hosts the status bus and "
    "the labels proxy (docs/deploy.md)."
)
@camera_option(
    "With --role capture: only this camera (repeatable; default: every camera; env SIGHTD_CAMERA)."
)
@click.option(
    "--worker",
    "workers",
    multiple=True,
    metavar="NAME",
    envvar="SIGHTD_WORKER",
    help="With --role infer: only this worker from workers: (repeatable; default: all; "
    "env SIGHTD_WORKER).",
)
def run(
    config_path: str | None,
    log_level: str | None,
    roles: tuple[str, ...],
    cameras: tuple[str, ...],
    workers: tuple[str, ...],
) -> None:
    """Start and supervise the pipeline, or this host's part of it, from the config.

    One process per camera, one inference worker (or one per named worker), one per
    subscriber; crashed or silent processes are restarted. Ctrl-C or SIGTERM stops
    everything (exit code 0). Without a model file yet it starts anyway and the worker waits
    for one (train it in the console's Teach page). Under systemd (Type=notify) it reports READY
    once the model is loaded (on a host without a worker: once every part runs) and feeds the
    watchdog while labels flow.
    """
    from sightd.checks import refuse_insecure_network, waiting_for_model
    from sightd.config import load_config
    from sightd.daemon.roles import make_plan
    from sightd.daemon.supervisor import Supervisor, serve
    from sightd.sources import validate_cameras
    from sightd.subscribers.registry import validate_subscribers

    config = load_config(config_path)
    if log_level:
        config = config.model_copy(update={"log_level": log_level})
    plan = make_plan(config, roles, cameras, workers)
    refuse_insecure_network(config, config_path)
    if "subscribers" in plan.roles:
        validate_subscribers(config, config_path or "")  # a typo stops us before anything starts
    if "capture" in plan.roles:
        validate_cameras(config, config_path or "")
    if "web" in plan.roles and config.http.enabled:
        from sightd.web.security import console_token

        console_token(config.http)  # beyond loopback the console needs its token, or no start
    model = Path(config.model.path)
    if "infer" in plan.roles and model.is_dir():
        raise SightdError(f"model.path {model} is a folder; set it to a model.safetensors")
    if "infer" in plan.roles and not model.exists():  # a first run: teach it in the console
        click.echo(f"Warning: model.path: {waiting_for_model(model)}", err=True)
    supervisor = Supervisor(config, plan=plan)
    if not supervisor.children and not plan.hub:
        raise SightdError(
            f"nothing to run for --role {' --role '.join(sorted(plan.roles))}: "
            "this config gives those roles no part (check cameras, workers, http.enabled)"
        )
    serve(supervisor)


@click.group("service")
def service() -> None:
    """Run sightd as a systemd service (hardened unit, Type=notify, watchdog).

    `print` shows the unit for this machine, `install` writes it, `uninstall` removes it.
    """


user_option = click.option(
    "--user", is_flag=True, help="A user service (~/.config/systemd/user) instead of a system one."
)


@service.command("print")
@config_option
@user_option
def service_print(config_path: str | None, user: bool) -> None:
    """Print the unit for this machine without writing it.

    A warning on stderr names anything the service needs (the config, this Python
    environment, the model, a video) that lies under /tmp, which the unit's PrivateTmp hides.
    """
    click.echo(_unit(config_path, user), nl=False)


@service.command("install")
@config_option
@user_option
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write the unit here instead of systemd's folder.",
)
def service_install(config_path: str | None, user: bool, unit_dir: str | None) -> None:
    """Write sightd.service for this interpreter and config; print the systemctl steps.

    It never runs systemctl itself: you review the unit, then run the printed commands. It
    warns, as `print` does, about what lies under /tmp.
    """
    from sightd.daemon.service import install_unit, next_steps
    from sightd.daemon.service import unit_dir as default_unit_dir

    directory = Path(unit_dir) if unit_dir else default_unit_dir(user)
    try:
        path = install_unit(_unit(config_path, user), directory)
    except PermissionError:
        hint = "run it with sudo, or use --user for a user service"
        raise SightdError(
            f"cannot write {directory}/sightd.service: permission denied; {hint}"
        ) from None
    except OSError as exc:
        raise SightdError(f"cannot write {directory}/sightd.service: {exc.strerror}") from None
    click.echo(f"wrote {path}")
    click.echo("now run:")
    for step in next_steps(user):
        click.echo(f"  {step}")
    click.echo(f"(`sightd service uninstall{' --user' * user}` undoes it)")


@service.command("uninstall")
@user_option
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Remove the unit from here (as installed with --unit-dir); systemctl is not run.",
)
def service_uninstall(user: bool, unit_dir: str | None) -> None:
    """Stop and disable the service and remove the unit `install` wrote.

    Runs `systemctl disable --now sightd`, removes sightd.service and reloads systemd. When
    it cannot (a system service without sudo, no systemctl, a step that fails), it stops
    there, with exit status 1, and prints the commands still to run.
    """
    from sightd.daemon.service import CannotUninstall, installed_unit, uninstall
    from sightd.daemon.service import unit_dir as default_unit_dir

    systemd_dir = default_unit_dir(user)
    directory = Path(unit_dir) if unit_dir else systemd_dir
    path = installed_unit(directory)
    try:
        done = uninstall(path, user, systemd=directory.resolve() == systemd_dir.resolve())
    except CannotUninstall as exc:
        click.echo(f"Error: {exc}; to finish, run:", err=True)
        for command in exc.commands:
            click.echo(f"  {command}")
        raise SystemExit(1) from None
    for command in done:
        click.echo(f"done: {command}")


def _unit(config_path: str | None, user: bool) -> str:
    """The unit for this machine; what it cannot see under /tmp is a warning on stderr."""
    from sightd.config import DEFAULT_CONFIG_PATH, load_config
    from sightd.daemon.service import private_tmp_warnings, unit_for

    config = load_config(config_path)
    path = Path(config_path) if config_path else None
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    for warning in private_tmp_warnings(config, path):
        click.echo(f"Warning: {warning}", err=True)
    return unit_for(config, path, user)
