"""`sightd listen`: the bus's messages as JSON lines on stdout, one per message (pipe to jq)."""

from __future__ import annotations

import json
import os
import sys

import click

from sightd.cli_options import config_option


@click.command("listen")
@config_option
@click.option(
    "--topic",
    "kind",
    type=click.Choice(["label", "event", "status", "frame"]),
    default="label",
    show_default=True,
    help="Which messages to print (frames are printed without their pixels).",
)
@click.option("--camera", help="Only this camera's messages (default: every camera).")
@click.option("--endpoint", multiple=True, help="Connect here instead (repeatable).")
@click.option("--timeout", type=float, help="Exit after this many seconds without a message.")
def listen(config_path, kind, camera, endpoint, timeout) -> None:
    """Print label, event, status or frame messages as JSON lines until Ctrl-C."""
    from sightd.client import subscribe
    from sightd.process import configure_logging

    configure_logging("info")  # on stderr: which endpoint it waits on, and a warning if quiet
    messages = subscribe(kind, camera, list(endpoint) or None, config_path, timeout)
    try:
        for message in messages:
            if "payload" in message:
                message["payload_bytes"] = len(message.pop("payload"))
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()  # a line at a time, also into a pipe
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `sightd listen | head`: the reader left; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
