"""`sightd keys`: create the CURVE key pairs that encrypt and authenticate the bus."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def keys() -> None:
    """Manage ZeroMQ CURVE keys (transport.curve: true)."""


@keys.command("generate")
@click.option("--dir", "keys_dir", default="keys", show_default=True, type=click.Path())
@click.option(
    "--client",
    "clients",
    multiple=True,
    default=["client"],
    show_default=True,
    help="Client key pair to create and authorise (repeatable).",
)
@click.option("--no-server", is_flag=True, help="Only client pairs (for another machine).")
def generate(keys_dir: str, clients: tuple[str, ...], no_server: bool) -> None:
    """Write a server key pair and client key pairs; secret files get mode 0600."""
    from sightd.curve import generate_keys

    for path in generate_keys(Path(keys_dir), list(clients), server=not no_server):
        click.echo(path)
    click.echo(
        f"Set `transport: {{curve: true, keys_dir: {keys_dir}}}` in config.yaml. Copy "
        "server.key to client machines; put their public .key files in authorized/.",
        err=True,
    )
