"""Options shared by several `sightd` commands.

Command modules import them from here, never from `sightd.cli`: the root group imports the
command modules lazily, and a command module that imported the CLI would import it back.
"""

from __future__ import annotations

import click

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: ./config.yaml if present, else built-in defaults).",
)

ROLE_CHOICES = ("capture", "infer", "subscribers", "web", "all")  # sightd.daemon.roles.ROLES + all


def role_option(help: str):
    """--role (repeatable, also SIGHTD_ROLE): which parts of a deployment this host runs."""
    return click.option(
        "--role", "roles", multiple=True, type=click.Choice(ROLE_CHOICES), envvar="SIGHTD_ROLE",
        help=help,
    )  # fmt: skip


def camera_option(help: str):
    """--camera NAME (repeatable, also SIGHTD_CAMERA): narrows a capture host to its cameras."""
    return click.option(
        "--camera", "cameras", multiple=True, metavar="NAME", envvar="SIGHTD_CAMERA", help=help
    )
