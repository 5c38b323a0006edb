"""CLI commands for running sightd as a whole: run, status, service, demo, collect.

Module-level imports stay light (no torch, no cv2): `sightd --help` must stay instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from sightd.cli import config_option
from sightd.errors import SightdError


@click.command("run")
@config_option
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Override log_level from the config.",
)
def run(config_path: str | None, log_level: str | None) -> None:
    """Start and supervise the whole pipeline from the config.

    One process per camera, one inference worker, one per subscriber; crashed or silent
    processes are restarted. Ctrl-C or SIGTERM stops everything (exit code 0). Under systemd
    (Type=notify) it reports READY once the model is loaded and feeds the watchdog while
    labels flow.
    """
    from sightd.config import load_config
    from sightd.daemon.supervisor import Supervisor, serve
    from sightd.sources import validate_cameras
    from sightd.subscribers.registry import validate_subscribers

    config = load_config(config_path)
    if log_level:
        config = config.model_copy(update={"log_level": log_level})
    validate_subscribers(config, config_path or "")  # a typo stops us before anything starts
    validate_cameras(config, config_path or "")
    model = Path(config.model.path)
    if not model.is_file():
        raise SightdError(
            f"model file {model} does not exist; train one with `sightd train` "
            "or set model.path in the config"
        )
    serve(Supervisor(config))


@click.command("status")
@config_option
@click.option(
    "--seconds",
    type=click.FloatRange(0.1, 60),
    default=None,
    help="How long to listen (default: 1.5 status intervals + 0.5 s).",
)
def status(config_path: str | None, seconds: float | None) -> None:
    """Show each component's state, fps, drops, latency and the label per camera."""
    from sightd.config import load_config
    from sightd.status import format_status, read_status

    config = load_config(config_path)
    seconds = seconds or 1.5 * config.transport.status_interval + 0.5
    latest = read_status(config, seconds)
    if not latest:
        raise SightdError(
            f"no status heard in {seconds:g} s on {config.transport.status} or the camera and "
            "labels endpoints; is `sightd run` running with this config?"
        )
    for line in format_status(latest):
        click.echo(line)


@click.group("service")
def service() -> None:
    """Run sightd as a systemd service (hardened unit, Type=notify, watchdog)."""


user_option = click.option(
    "--user", is_flag=True, help="A user service (~/.config/systemd/user) instead of a system one."
)


@service.command("print")
@config_option
@user_option
def service_print(config_path: str | None, user: bool) -> None:
    """Print the unit for this machine without writing it."""
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

    It never runs systemctl itself: you review the unit, then run the printed commands.
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


def _unit(config_path: str | None, user: bool) -> str:
    from sightd.config import DEFAULT_CONFIG_PATH, load_config
    from sightd.daemon.service import unit_for

    config = load_config(config_path)
    path = Path(config_path) if config_path else None
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    return unit_for(config, path, user)


@click.command("demo")
@click.option(
    "--seconds",
    type=click.FloatRange(5, 3600),
    default=40.0,
    show_default=True,
    help="How long the live part runs, from the first label.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Data set, model and video go here (default: ~/.cache/sightd/demo); reused next time.",
)
@click.option(
    "--epochs",
    type=click.IntRange(1, 1000),
    default=None,
    help="Training epochs for the demo model (default 20: short, on camera-like augmentation).",
)
@click.option("--retrain", is_flag=True, help="Train again even if a cached model fits.")
def demo(seconds: float, workdir: str | None, epochs: int | None, retrain: bool) -> None:
    """Train on digits and run the live pipeline on a video: no camera, no data needed.

    Writes the digits data set, trains a model (reused next time), films held-out digit cards
    in a known order, runs the real supervisor on that video with a print subscriber, and ends
    with the accuracy of the events against the cards shown and the latency percentiles.
    """
    from sightd.demo.run import DEMO_EPOCHS, default_workdir, run_demo

    folder = Path(workdir) if workdir else default_workdir()
    run_demo(folder, seconds, epochs or DEMO_EPOCHS, retrain)


@click.command("collect")
@click.argument("label")
@config_option
@click.option(
    "--source",
    default=None,
    help="Camera index, video file, URL, image folder or 'synthetic' "
    "(default: the first camera in the config).",
)
@click.option("--count", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option(
    "--fps", type=click.FloatRange(0.1, 60), default=5.0, show_default=True, help="Images a second."
)
@click.option(
    "--data",
    type=click.Path(file_okay=False),
    default=None,
    help="Data set folder (default: train.data_dir from the config).",
)
@click.option(
    "--countdown", type=click.IntRange(0, 60), default=3, show_default=True, help="Seconds."
)
@click.option(
    "--roi",
    default=None,
    metavar="X,Y,W,H",
    help="Record only this part of the frame, as fractions (e.g. 0.25,0,0.5,1), or 'none' "
    "for all of it (default: the camera's roi from the config).",
)
def collect(
    label: str,
    config_path: str | None,
    source: str | None,
    count: int,
    fps: float,
    data: str | None,
    countdown: int,
    roi: str | None,
) -> None:
    """Record training images of LABEL from a camera into DATA/LABEL/.

    What is recorded is what the worker will classify: the camera's roi (and resize). Collect
    a few classes, then `sightd train DATA`. Images already in the folder are kept; new ones
    are numbered after them.
    """
    from sightd.config import CameraConfig, load_config, override
    from sightd.images import is_image_file
    from sightd.sources import with_source
    from sightd.trainer.collect import check_label, parse_roi, record

    config = load_config(config_path)
    check_label(label)
    camera = config.cameras[0] if config.cameras else CameraConfig()
    if source is not None:  # its kind is told by the new source
        camera = with_source(camera, int(source) if source.isdigit() else source)
    camera = override(camera, "cameras[0]", loop=False)
    if roi is not None:
        camera = camera.model_copy(update={"roi": parse_roi(roi)})
    folder = Path(data or config.train.data_dir) / label
    written = record(camera, folder, count, fps, countdown)
    total = sum(1 for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else 0
    click.echo(f"wrote {written} images to {folder} ({total} there now)")
    click.echo(f"next: collect the other classes, then `sightd train {folder.parent}`")
