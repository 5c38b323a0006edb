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
