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
    "check-config": ("sightd.cli", "check_config", "Validate a config and what it names."),
    "train": ("sightd.trainer.commands", "train", "Train a classifier on folder-per-class images."),
    "eval": ("sightd.trainer.commands", "evaluate", "Accuracy, per-class table and confusion."),
    "predict": ("sightd.trainer.commands", "predict", "Label image files with a trained model."),
    "dataset": ("sightd.trainer.commands", "dataset", "Write a built-in dataset as folders."),
    "capture": ("sightd.publishers.commands", "capture", "Publish frames from one camera."),
    "infer": ("sightd.publishers.commands", "infer", "Classify frames; publish labels, events."),
    "listen": ("sightd.listen", "listen", "Print bus messages as JSON lines."),
    "subscribe": ("sightd.subscribers.commands", "subscribe", "Run one subscriber alone."),
    "run": ("sightd.daemon.commands", "run", "Start and supervise the whole pipeline."),
    "status": ("sightd.daemon.commands", "status", "Show each component's state and label."),
    "demo": ("sightd.daemon.commands", "demo", "Train on digits and run the live demo."),
    "collect": ("sightd.daemon.commands", "collect", "Record training images from a camera."),
    "service": ("sightd.daemon.commands", "service", "Install sightd as a systemd service."),
    "keys": ("sightd.keys", "keys", "Generate CURVE key pairs for encryption."),
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

    Start with `sightd demo`; see README.md for each command.
    """


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: ./config.yaml if present, else built-in defaults).",
)


@click.command("check-config")
@config_option
def check_config(config_path: str | None) -> None:
    """Validate a config file and what it points at; print the effective configuration.

    Beyond the keys and types: each camera's kind and options, a missing model file, video
    file or image folder, missing CURVE key files (errors), an MQTT broker that does not
    answer (a warning). Each problem is one line on stderr; the exit status is 1 when there
    is an error (and then nothing is printed on stdout), 0 otherwise.
    """
    import yaml

    from sightd.checks import check_config as find_problems
    from sightd.config import DEFAULT_CONFIG_PATH, load_config

    config = load_config(config_path)
    problems = find_problems(config, source=str(config_path or DEFAULT_CONFIG_PATH))
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
