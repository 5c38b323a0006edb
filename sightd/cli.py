"""The `sightd` command: one root group whose heavy commands load only when run.

`sightd --help` never imports torch: each command lives in its own module, named here with
its one-line help, and is imported when it is invoked (or its own --help is asked for).
"""

from __future__ import annotations

import sys

import click

from sightd import __version__
from sightd.errors import SightdError
from sightd.plugins import load

# name -> (module, attribute, short help). The short help is here so listing needs no import.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "check-config": ("sightd.checks", "check_config", "Validate a config and what it names."),
    "train": ("sightd.trainer.commands", "train", "Train a classifier on folder-per-class images."),
    "eval": ("sightd.trainer.commands", "evaluate", "Accuracy, per-class table and confusion."),
    "predict": ("sightd.trainer.commands", "predict", "Label image files with a trained model."),
    "explain": ("sightd.explain.commands", "explain", "Grad-CAM: where a model looked, as PNGs."),
    "export": ("sightd.export", "export_command", "A model as ONNX, OpenVINO or TorchScript."),
    "dataset": ("sightd.trainer.commands", "dataset", "Write a built-in dataset as folders."),
    "capture": ("sightd.publishers.commands", "capture", "Publish frames from one camera."),
    "infer": ("sightd.publishers.commands", "infer", "Classify frames; publish labels, events."),
    "listen": ("sightd.listen", "listen", "Print bus messages as JSON lines."),
    "subscribe": ("sightd.subscribers.commands", "subscribe", "Run one subscriber alone."),
    "run": ("sightd.daemon.commands", "run", "Start and supervise the whole pipeline."),
    "status": ("sightd.status", "status", "Show each component's state and label."),
    "demo": ("sightd.demo.commands", "demo", "Train on digits and run the live demo."),
    "collect": ("sightd.trainer.collect", "collect", "Record training images from a camera."),
    "service": ("sightd.daemon.commands", "service", "Install or remove the systemd service."),
    "keys": ("sightd.keys", "keys", "Generate CURVE key pairs for encryption."),
    "web": ("sightd.web.commands", "web", "Serve the browser console (and /metrics) alone."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[name]
        # A command that does not import is an error naming its module and the exception,
        # not click's "No such command".
        return load(f"{module_name}:{attribute}", f"command {name!r}", instance_of=click.Command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SightdError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sightd")
def main() -> None:
    """sightd: camera frames in, trustworthy label events out.

    Start with `sightd demo`. `sightd COMMAND --help` (or `python -m sightd COMMAND --help`)
    says what each command does and takes.
    """


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
