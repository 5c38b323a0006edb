"""The command subscriber runs real programs: hostile labels stay one argument and never reach
a shell, a timeout kills the whole process group, and cooldown and the concurrency cap hold."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import wait_for
from subscriber_harness import Bus, Subscribers


@pytest.fixture
def subscribers(tmp_path):
    started = Subscribers(tmp_path)
    yield started
    started.close()


def script(folder: Path, name: str, code: str) -> str:
    path = folder / name
    path.write_text(textwrap.dedent(code))
    return str(path)


def argv_writer(folder: Path) -> str:
    """A program that records its arguments (one JSON file per run), then sleeps argv[2] s."""
    return script(
        folder,
        "argv_writer.py",
        """
        import json, os, sys, time, uuid
        out, pause, *args = sys.argv[1:]
        name = os.path.join(out, uuid.uuid4().hex)
        with open(name + ".tmp", "w") as f:
            json.dump({"args": args, "started": time.time()}, f)
        os.replace(name + ".tmp", name + ".json")  # the test never reads half a file
        time.sleep(float(pause))
        """,
    )


def runs(folder: Path) -> list[dict]:
    return sorted(
        (json.loads(p.read_text()) for p in folder.glob("*.json")), key=lambda r: r["started"]
    )


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped by its (new) parent


def test_a_hostile_label_is_one_argument_and_reaches_no_shell(config_file, subscribers, tmp_path):
    # given a command whose arguments hold placeholders
    out = tmp_path / "runs"
    out.mkdir()
    run = [
        sys.executable,
        argv_writer(tmp_path),
        str(out),
        "0",
        "{label}",
        "{camera}:{confidence:.2f}",
    ]
    path = config_file(subscribers=[{"type": "command", "run": run, "cooldown": 0}])
    hostile = [
        f"$(touch {tmp_path}/pwned1); rm -rf ~ \"quoted\" 'x' | ; && `touch {tmp_path}/pwned2`",
        f"; touch {tmp_path}/pwned3 # * ~ $HOME {{camera}} %s\n",
    ]
    with Bus(path) as bus:
        subscribers.start(path, "command")
        bus.wait_subscriptions(1)
        # when events carry labels full of shell syntax
        for label in hostile:
            bus.event(label, confidence=0.97)
        # then each label arrives as exactly one literal argument, and nothing ran in a shell
        wait_for(lambda: len(runs(out)) == 2, what="two runs")
        assert sorted(r["args"] for r in runs(out)) == sorted([h, "cam0:0.97"] for h in hostile)
        assert not list(tmp_path.glob("pwned*"))


def test_a_timeout_kills_the_whole_process_group(config_file, subscribers, tmp_path):
    # given a program that starts a grandchild and both outlive the 0.5 s timeout
    pids = tmp_path / "pids"
    program = script(
        tmp_path,
        "spawner.py",
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open(sys.argv[1], "w").write(f"{child.pid}")
        time.sleep(60)
        """,
    )
    entry = {"type": "command", "run": [sys.executable, program, str(pids)], "timeout": 0.5}
    path = config_file(subscribers=[entry])
    with Bus(path) as bus:
        subscribers.start(path, "command")
        bus.wait_subscriptions(1)
        # when an event starts it
        bus.event("thumbs_up")
        grandchild = int(wait_for(lambda: pids.exists() and pids.read_text(), what="the pid"))
        # then at the timeout the grandchild dies with its parent, and the timeout is counted
        status = bus.status_of("subscriber:command", lambda body: body["timeouts"] == 1)
        assert status["running"] == 0
        wait_for(lambda: not alive(grandchild), timeout=5, what="the grandchild to die")


def test_cooldown_and_concurrency_cap_skip_runs(config_file, subscribers, tmp_path):
    # given a command on labels a and b that takes 1 s, with a cooldown and one run at a time
    out = tmp_path / "runs"
    out.mkdir()
    entry = {
        "type": "command",
        "on": ["a", "b"],
        "run": [sys.executable, argv_writer(tmp_path), str(out), "1", "{label}"],
        "cooldown": 30,
        "max_concurrent": 1,
    }
    path = config_file(subscribers=[entry])
    with Bus(path) as bus:
        subscribers.start(path, "command")
        bus.wait_subscriptions(1)
        # when a arrives twice and b while a still runs, and c (not a trigger)
        for label in ["a", "a", "b", "c"]:
            bus.event(label)
        status = bus.status_of("subscriber:command", lambda body: body["delivered"] == 3)
        # then a ran once, a again was cooling down and b found the one slot taken
        assert (status["runs"], status["skipped"]) == (1, 2)
        # and once a is done, b runs
        bus.status_of("subscriber:command", lambda body: body["running"] == 0)
        bus.event("b")
        wait_for(lambda: len(runs(out)) == 2, what="the second run")
        assert [r["args"] for r in runs(out)] == [["a"], ["b"]]


def test_unknown_runs_a_command_only_when_on_names_it(config_file, subscribers, tmp_path):
    # given a command with no `on` (any label) and one with `on: [unknown]`
    any_out, unknown_out = tmp_path / "any", tmp_path / "unknown"
    for folder in (any_out, unknown_out):
        folder.mkdir()
    writer = argv_writer(tmp_path)
    entries = [
        {"type": "command", "run": [sys.executable, writer, str(any_out), "0", "{label}"]},
        {
            "type": "command",
            "on": ["unknown"],
            "run": [sys.executable, writer, str(unknown_out), "0", "{label}"],
        },
    ]
    path = config_file(subscribers=entries)
    with Bus(path) as bus:
        subscribers.start(path, "command.0")
        subscribers.start(path, "command.1")
        bus.wait_subscriptions(2)
        # when the stable label becomes unknown, then thumbs_up
        bus.event("unknown", previous="fist", confidence=0.3)
        bus.event("thumbs_up", previous="unknown")
        # then the plain command ran for thumbs_up only, and the other for unknown
        wait_for(lambda: runs(any_out) and runs(unknown_out), what="a run of each command")
        status = bus.status_of("subscriber:command.0", lambda body: body["received"] == 2)
        assert [r["args"] for r in runs(any_out)] == [["thumbs_up"]]
        assert [r["args"] for r in runs(unknown_out)] == [["unknown"]]
        assert status["delivered"] == 1
