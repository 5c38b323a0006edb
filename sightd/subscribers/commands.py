"""`sightd subscribe`: run one subscriber in the foreground, from flags or from the config."""

from __future__ import annotations

import os
import re
import sys

import click

from sightd.cli_options import config_option

EXIT_STUCK = 3  # the handler hung past handler_timeout; a supervisor would restart us


class _SubscribeCommand(click.Command):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the installed types (plugins included) with an example entry for each."""
        from sightd.subscribers.registry import known_types, subscriber_class

        rows = []
        for name in known_types():
            try:
                example = subscriber_class(name).example
            except Exception as exc:  # a broken plugin still shows up, with why
                example = {"error": str(exc)}
            options = " ".join(f"-o {_shell_word(k, v)}" for k, v in example.items())
            rows.append((name, options))
        with formatter.section("Types"):
            formatter.write_dl(rows)
        super().format_epilog(ctx, formatter)


@click.command("subscribe", cls=_SubscribeCommand)
@click.argument("subscriber")
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set one of the subscriber's keys; VALUE is YAML (5, true, [a, b]). Repeatable.",
)
@config_option
def subscribe(subscriber: str, options: tuple[str, ...], config_path: str | None) -> None:
    """Run one subscriber alone in the foreground until Ctrl-C.

    SUBSCRIBER is a type (see Types below), or one from the config's subscribers list: its
    type when there is one of it, `TYPE.INDEX` when there are several. The config entry's keys
    are the defaults; each -o KEY=VALUE overrides one. Example:

        sightd subscribe command -o on=thumbs_up -o 'run=[notify-send, "{label}"]'

    If a handler hangs past handler_timeout this exits with status 3 (`sightd run` restarts
    a hung subscriber by itself).
    """
    from sightd.config import SubscriberEntry, load_config
    from sightd.daemon.forwarder import foreground_status_bus
    from sightd.process import foreground_runtime
    from sightd.subscribers.host import SubscriberStuck, run_subscriber
    from sightd.subscribers.registry import parse_entry, subscriber_name

    config = load_config(config_path)
    index, base = _pick(config, subscriber)
    if index is not None:  # the config's own entry must be right before flags change it
        parse_entry(base, config_path or "config.yaml", f"subscribers[{index}]")
    data = {**base, **_parse_options(options)}
    parse_entry(data, source=f"subscribe {subscriber}")
    entries = list(config.subscribers)
    if index is None:
        entries.append(SubscriberEntry.model_validate(data))
        index = len(entries) - 1
    else:
        entries[index] = SubscriberEntry.model_validate(data)
    config = config.model_copy(update={"subscribers": entries})
    runtime = foreground_runtime(subscriber_name(config, index), config.log_level)
    try:
        with foreground_status_bus(config.transport):
            run_subscriber(config, index, runtime)
    except SubscriberStuck as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.stdout.flush()
        os._exit(EXIT_STUCK)  # the hung thread cannot be joined; leave without it


def _shell_word(key: str, value) -> str:
    """KEY=VALUE as one shell word whose VALUE reads back as YAML to `value`."""
    import json
    import shlex

    text = value if isinstance(value, str) and re.fullmatch(r"[\w./:-]+", value) else None
    return shlex.quote(f"{key}={text or json.dumps(value)}")


def _pick(config, subscriber: str) -> tuple[int | None, dict]:
    """(index, entry) of the configured subscriber meant, or (None, {type}) for a new one."""
    entries = config.subscribers
    match = re.fullmatch(r"(.+)\.(\d+)", subscriber)
    if match and int(match[2]) < len(entries) and entries[int(match[2])].type == match[1]:
        return int(match[2]), entries[int(match[2])].model_dump()
    found = [i for i, entry in enumerate(entries) if entry.type == subscriber]
    if len(found) > 1:
        names = ", ".join(f"{subscriber}.{i}" for i in found)
        raise click.BadParameter(
            f"the config has several; pick one of {names}", param_hint="SUBSCRIBER"
        )
    if found:
        return found[0], entries[found[0]].model_dump()
    return None, {"type": subscriber}


def _parse_options(options: tuple[str, ...]) -> dict:
    import yaml

    from sightd.config import parse_yaml

    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{option!r}: expected KEY=VALUE", param_hint="-o/--option")
        if key.strip() == "type":
            raise click.BadParameter("the type is the SUBSCRIBER argument", param_hint="-o type")
        try:
            parsed[key.strip()] = parse_yaml(value) if value else ""
        except yaml.YAMLError:
            raise click.BadParameter(f"{option!r}: VALUE is not valid YAML") from None
    return parsed
