"""Subscriber configuration, driven by the registry: every built-in validates its example,
refuses unknown keys with the YAML path, and is listed by `sightd subscribe --help`."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from sightd.cli import main
from sightd.errors import SightdError
from sightd.subscribers.base import SubscriberContext
from sightd.subscribers.placeholders import check_template, message_values, render
from sightd.subscribers.registry import BUILTINS, parse_entry, subscriber_class

HOSTILE = """$(touch /tmp/x); rm -rf ~ "quoted" 'x' | ; && `id` {camera} %s"""


def write_config(tmp_path, subscribers):
    """A config with these subscribers and a model file, so check-config checks only them."""
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"{}")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"subscribers": subscribers, "model": {"path": str(model)}}))
    return path


@pytest.mark.parametrize("kind", sorted(BUILTINS))
def test_every_builtin_accepts_its_documented_example(kind):
    cls = subscriber_class(kind)
    config = parse_entry({"type": kind, **cls.example})
    assert isinstance(config, cls.Config)
    subscriber = cls(config, SubscriberContext(f"subscriber:{kind}"))
    assert subscriber.topics == tuple(config.topics or cls.default_topics)


@pytest.mark.parametrize("kind", sorted(BUILTINS))
def test_check_config_names_the_yaml_path_of_a_misspelt_key(tmp_path, kind):
    # given a config whose second subscriber has a key no subscriber knows
    example = subscriber_class(kind).example
    path = write_config(tmp_path, [{"type": "print"}, {"type": kind, **example, "colour": 1}])
    # when it is checked
    result = CliRunner().invoke(main, ["check-config", "-c", str(path)])
    # then one line names the file, the entry and the key
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {path}: subscribers[1].colour: unknown key; "
        "check its spelling against config.yaml's documented keys"
    ]


@pytest.mark.parametrize("kind", sorted(BUILTINS))
def test_subscribe_refuses_a_wrong_type_before_starting(tmp_path, kind):
    # given the type's example options and one value of the wrong type
    options = [
        f"{key}={json.dumps(value)}" for key, value in subscriber_class(kind).example.items()
    ]
    args = ["subscribe", kind, "-c", str(write_config(tmp_path, []))]
    for option in [*options, "queue_size=lots"]:
        args += ["-o", option]
    # when the subscriber is started, then it stops at once with one line naming the key
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: subscribe {kind}: queue_size: expected an integer"
    ]


def test_subscribe_help_lists_every_builtin_with_an_example():
    result = CliRunner().invoke(main, ["subscribe", "--help"])
    assert result.exit_code == 0
    types = result.output.split("Types:")[1]
    for kind in BUILTINS:
        assert f"\n  {kind} " in types


def test_an_unknown_type_lists_the_known_ones(tmp_path):
    path = write_config(tmp_path, [{"type": "prnt"}])
    result = CliRunner().invoke(main, ["check-config", "-c", str(path)])
    assert result.exit_code == 1
    line = result.output.strip()
    assert line.startswith(f"Error: {path}: subscribers[0].type: unknown subscriber type 'prnt'")
    assert "known types: print, log, command, webhook, mqtt" in line


def test_on_thumbs_up_in_yaml_is_the_commands_trigger(tmp_path):
    # given the issue's own example: YAML 1.1 would read `on` as the boolean true
    path = write_config(tmp_path, [])
    path.write_text("subscribers:\n  - type: command\n    on: thumbs_up\n    run: [ls]\n")
    path.write_text(path.read_text() + f"model:\n  path: {tmp_path / 'model.safetensors'}\n")
    result = CliRunner().invoke(main, ["check-config", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert parse_entry({"type": "command", "on": "thumbs_up", "run": ["ls"]}).labels == [
        "thumbs_up"
    ]


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{label.__class__}", "unknown placeholder {label.__class__}"),
        ("{scores[x]}", "unknown placeholder {scores[x]}"),
        ("{label!r}", "unknown placeholder {label}"),
        ("{nope}", "unknown placeholder {nope}"),
        ("{label:{camera}}", "nested placeholders"),
        ("{confidence:q}", "Unknown format code"),
        ("{label", "expected '}'"),
    ],
)
def test_a_template_may_only_name_the_documented_placeholders(template, problem):
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("{", r"\{")):
        check_template(template)


def test_a_hostile_label_is_inserted_as_plain_text():
    values = message_values({"kind": "event", "camera": "cam0", "label": HOSTILE, "at": 0.0,
                             "confidence": 0.5})  # fmt: skip
    assert render("{label}", values) == HOSTILE
    assert render("x={label}|{camera}|{confidence:.2f}", values) == f"x={HOSTILE}|cam0|0.50"


def test_a_command_cannot_take_its_program_from_the_message():
    with pytest.raises(SightdError, match=r"subscribers\[0\]\.run: the program"):
        parse_entry({"type": "command", "run": ["{label}"]}, prefix="subscribers[0]")


def test_webhook_retries_must_fit_within_the_handler_timeout():
    with pytest.raises(SightdError, match="more than handler_timeout"):
        parse_entry({"type": "webhook", "url": "http://h", "timeout": 30, "retries": 3})
    parse_entry({"type": "webhook", "url": "http://h", "timeout": 30, "handler_timeout": 200})


@pytest.mark.parametrize(
    ("message", "wanted"),
    [
        ({"kind": "label", "camera": "cam0", "label": "a", "confidence": 0.9}, True),
        ({"kind": "label", "camera": "cam1", "label": "a", "confidence": 0.9}, False),
        ({"kind": "label", "camera": "cam0", "label": "b", "confidence": 0.9}, False),
        ({"kind": "label", "camera": "cam0", "label": "a", "confidence": 0.5}, False),
        ({"kind": "event", "camera": "cam0", "label": "a", "confidence": 0.9}, False),
        ({"kind": "status", "component": "infer", "state": "online"}, True),
    ],
)
def test_the_common_filters(message, wanted):
    entry = {"type": "print", "topics": ["label", "status"], "cameras": "cam0", "labels": ["a"]}
    config = parse_entry({**entry, "min_confidence": 0.8})
    subscriber = subscriber_class("print")(config, SubscriberContext("subscriber:print"))
    assert subscriber.wants(message) is wanted


def unknown_messages():
    return [
        {"kind": "event", "camera": "cam0", "label": "unknown", "previous": "a", "confidence": 0.3},
        {"kind": "label", "camera": "cam0", "label": "unknown", "confidence": 0.3},
    ]


def built(kind: str, **options):
    """The built-in `kind` from its example, without its own label filter, plus `options`."""
    cls = subscriber_class(kind)
    example = {k: v for k, v in cls.example.items() if k not in ("on", "labels")}
    config = parse_entry({"type": kind, **example, "topics": ["label", "event"], **options})
    return cls(config, SubscriberContext(f"subscriber:{kind}"))


def test_only_the_subscribers_that_record_are_given_unknown_by_default():
    # print and log record; mqtt filters its event topic itself (its retained state must say
    # unknown); command, webhook and third-party plugins act, so unknown must not reach them
    assert {kind for kind in BUILTINS if subscriber_class(kind).acts} == {"command", "webhook"}


@pytest.mark.parametrize("kind", sorted(BUILTINS))
def test_unknown_reaches_a_subscriber_that_acts_only_when_its_labels_name_it(kind):
    # given the built-in with no label filter, and one whose labels (command: on) name unknown
    plain = built(kind)
    named = built(kind, **{"on" if kind == "command" else "labels": ["unknown", "a"]})
    for message in unknown_messages():
        # then a label or event saying unknown is given to it only if it does not act on it
        assert plain.wants(message) is not type(plain).acts
        # or if it was asked for by name
        assert named.wants(message) is True
    # and a named label still reaches it, unknown or not in the filter
    assert plain.wants({**unknown_messages()[0], "label": "a", "confidence": 0.9}) is True
