"""Running under systemd: sd_notify over a real socket, the hardened unit, and `sightd status`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sightd.cli import main
from sightd.daemon import service
from sightd.daemon.notify import Watchdog, notify
from sightd.daemon.readiness import Readiness
from sightd.daemon.service import DOCS_VALUES, render_unit
from sightd.status import format_status

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    yield sock, {"NOTIFY_SOCKET": str(tmp_path / "notify")}
    sock.close()


def test_notify_sends_one_datagram_to_the_notify_socket(notify_socket):
    sock, env = notify_socket
    assert notify("READY=1", env)
    assert sock.recv(100) == b"READY=1"


def test_notify_reaches_an_abstract_socket():
    name = f"sightd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"STOPPING=1"


def test_notify_outside_systemd_does_nothing_and_never_blocks(notify_socket):
    assert notify("READY=1", {}) is False
    # a reader that stopped reading: the queue fills, the sender still returns at once
    _, env = notify_socket
    began = time.monotonic()
    results = [notify("WATCHDOG=1", env) for _ in range(50)]
    assert time.monotonic() - began < 2
    assert results[0] and not all(results)


def test_watchdog_pings_only_while_labels_flow(notify_socket):
    sock, env = notify_socket
    watchdog = Watchdog({**env, "WATCHDOG_USEC": "200000"})  # ping every 0.1 s at most
    watchdog.tick()  # no label yet: nothing
    watchdog.saw_label()
    watchdog.tick()
    assert sock.recv(100) == b"WATCHDOG=1"
    watchdog.saw_label()
    watchdog.tick()  # too soon after the last ping
    time.sleep(0.15)
    watchdog.tick()
    assert sock.recv(100) == b"WATCHDOG=1"
    time.sleep(0.15)
    watchdog.tick()  # no label since: no ping
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(100)


def test_a_worker_waiting_for_its_first_model_is_ready_and_feeds_the_watchdog(
    notify_socket, monkeypatch
):
    # given a supervisor under systemd whose worker has no model yet (a first `sightd run`)
    sock, env = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", env["NOTIFY_SOCKET"])
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    readiness = Readiness(["infer"])
    # when the worker says it is starting on its way to a model, nothing is told
    readiness._heard("infer", {"state": "starting", "frames_out": 0})
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(100)
    # then once it says it waits for a model, systemd hears READY=1 and the watchdog is fed
    waiting = {"state": "starting", "frames_out": 0, "waiting_for_model": True}
    readiness._heard("infer", waiting)
    assert sock.recv(100) == b"READY=1"
    readiness.tick()
    assert sock.recv(100) == b"WATCHDOG=1"


def test_service_install_writes_a_hardened_unit_and_only_prints_systemctl(tmp_path, monkeypatch):
    # given a user config dir and a `systemctl` on PATH that records any call
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\ntouch {tmp_path}/systemctl-called\n")
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  path: models/model.safetensors\n")

    # when the user installs the service
    result = CliRunner().invoke(main, ["service", "install", "--user", "-c", str(config)])

    # then the unit is in systemd's user folder, with this interpreter and config
    assert result.exit_code == 0, result.output
    unit = (tmp_path / "xdg" / "systemd" / "user" / "sightd.service").read_text()
    assert f"ExecStart={sys.executable} -m sightd run -c {config}" in unit
    for line in ("Type=notify", "WatchdogSec=30", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert line in unit.splitlines()
    assert "RuntimeDirectory=sightd" in unit
    # and the console's Teach page may write where it records, trains and deploys
    for folder in ("data", "runs", "models"):
        assert f"ReadWritePaths=-{tmp_path / folder}" in unit.splitlines()
    assert "ReadOnlyPaths=" not in unit
    assert "User=" not in unit and "WantedBy=default.target" in unit
    # and the systemctl steps are printed, not run
    assert "systemctl --user daemon-reload" in result.output
    assert "systemctl --user enable --now sightd" in result.output
    assert not (tmp_path / "systemctl-called").exists()


def test_service_install_into_an_impossible_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    inside_a_file = tmp_path / "file" / "units"
    result = CliRunner().invoke(main, ["service", "install", "--unit-dir", str(inside_a_file)])
    assert result.exit_code == 1
    # (a checkout, venv or config under /tmp adds its PrivateTmp warnings before the error)
    lines = [line for line in result.output.splitlines() if not line.startswith("Warning: ")]
    assert lines == [f"Error: cannot write {inside_a_file}/sightd.service: Not a directory"]


def test_the_unit_reads_the_model_folder_as_configured_so_a_retrain_is_seen(tmp_path, monkeypatch):
    # given a model served from runs/latest, the link each training run moves to its new run
    run = tmp_path / "runs" / "20240101-000000"
    run.mkdir(parents=True)
    (tmp_path / "runs" / "latest").symlink_to(run.name)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  path: runs/latest/model.safetensors\n")
    # when the unit is printed
    result = CliRunner().invoke(main, ["service", "print", "--user", "-c", str(config)])
    # then the folder of every run is open, not only the one latest points at today
    assert result.exit_code == 0, result.output
    assert f"ReadWritePaths=-{tmp_path / 'runs'}" in result.stdout.splitlines()
    # and without the console (no Teach page to deploy) it is only read
    config.write_text("model:\n  path: runs/latest/model.safetensors\nhttp:\n  console: false\n")
    result = CliRunner().invoke(main, ["service", "print", "--user", "-c", str(config)])
    assert f"ReadOnlyPaths=-{tmp_path / 'runs'}" in result.stdout.splitlines()
    assert f"ReadWritePaths=-{tmp_path / 'runs'}" not in result.stdout.splitlines()


def test_the_unit_lets_teach_and_the_snapshots_write_their_folders(tmp_path, monkeypatch):
    # given a config whose folders are relative, absolute, and under the home folder (~)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "config.yaml"
    config.write_text(
        "model:\n  path: /srv/models/door.safetensors\n"
        "train:\n  data_dir: ~/pictures\n  out_dir: ../elsewhere/runs\n"
        "events:\n  snapshots:\n    dir: shots\n"
    )
    # when the unit is printed
    result = CliRunner().invoke(main, ["service", "print", "--user", "-c", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    # then each is writable, as the absolute path `sightd run` in the working folder resolves
    wanted = [tmp_path, tmp_path / "shots", tmp_path / "home" / "pictures"]
    wanted += [tmp_path.parent / "elsewhere" / "runs", Path("/srv/models")]
    writable = [line.removeprefix("ReadWritePaths=-") for line in lines if "ReadWritePaths" in line]
    assert writable == [str(path) for path in wanted]
    # and with no console the model is read-only, while the worker still writes its snapshots
    config.write_text(config.read_text() + "http:\n  console: false\n")
    lines = CliRunner().invoke(main, ["service", "print", "-c", str(config)]).stdout.splitlines()
    assert [line for line in lines if "Paths=" in line] == [
        f"ReadWritePaths=-{tmp_path}",
        f"ReadWritePaths=-{tmp_path / 'shots'}",
        "ReadOnlyPaths=-/srv/models",
    ]


def test_service_print_warns_about_each_thing_that_lies_under_tmp(tmp_path, monkeypatch):
    # given a config, a Python environment, a model and a video under what the service sees as /tmp
    tmp = tmp_path / "tmp"
    (tmp / "venv").mkdir(parents=True)
    monkeypatch.setattr(service, "PRIVATE_TMP", (tmp,))
    monkeypatch.setattr(sys, "prefix", str(tmp / "venv"))
    monkeypatch.chdir(tmp_path)  # the working folder is not under it
    config = tmp / "config.yaml"
    config.write_text(
        f"model:\n  path: {tmp}/runs/model.safetensors\n"
        f"cameras:\n  - name: door\n    source: {tmp}/door.mp4\n"
    )
    # when the unit is printed
    result = CliRunner().invoke(main, ["service", "print", "--user", "-c", str(config)])
    # then stdout is the unit, and stderr has one warning line for each of the four
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# sightd:")
    warnings = result.stderr.splitlines()
    assert len(warnings) == 4, warnings
    assert all(w.startswith("Warning: ") and "PrivateTmp=yes" in w for w in warnings)
    named = (f"the config {config}", "environment (ExecStart", f"{tmp}/runs", f"{tmp}/door.mp4")
    for what in named:
        assert any(what in w for w in warnings), (what, warnings)


def test_service_print_warns_about_folders_the_console_writes_under_tmp(tmp_path, monkeypatch):
    # given a data set, runs and snapshots under what the service sees as /tmp
    tmp = tmp_path / "tmp"
    monkeypatch.setattr(service, "PRIVATE_TMP", (tmp,))
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"train:\n  data_dir: {tmp}/data\n  out_dir: {tmp}/runs\n"
        f"events:\n  snapshots:\n    dir: {tmp}/shots\n"
    )
    # when the unit is printed, then each is named: what Teach and the worker wrote there
    # would be lost with the service's private /tmp
    result = CliRunner().invoke(main, ["service", "print", "--user", "-c", str(config)])
    assert result.exit_code == 0, result.output
    warnings = result.stderr.splitlines()
    for key, folder in (("events.snapshots.dir", "shots"), ("train.data_dir", "data")):
        assert any(f"the folder {key} {tmp / folder} is under {tmp}" in w for w in warnings)
    assert any(f"train.out_dir {tmp / 'runs'}" in w for w in warnings), warnings


def test_service_print_outside_tmp_warns_about_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(service, "PRIVATE_TMP", (tmp_path / "elsewhere",))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["service", "print"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


@pytest.fixture
def user_install(tmp_path, monkeypatch):
    """A user unit written by `service install --user`, and a `systemctl` on PATH that logs
    each call to calls.log and exits with the status in systemctl.status (0 if absent)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/calls.log\n'
        f"if [ -f {tmp_path}/systemctl.status ]; then\n"
        f"  echo 'Failed to connect to bus: No medium found' >&2; exit 1\nfi\n"
    )
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    installed = CliRunner().invoke(main, ["service", "install", "--user"])
    assert installed.exit_code == 0, installed.output
    assert "sightd service uninstall --user" in installed.output
    return tmp_path / "xdg" / "systemd" / "user" / "sightd.service"


def test_service_uninstall_stops_disables_and_removes_the_unit(user_install, tmp_path):
    # when the user uninstalls the service
    result = CliRunner().invoke(main, ["service", "uninstall", "--user"])
    # then systemd stopped and disabled it, the unit is gone, and systemd has reloaded
    assert result.exit_code == 0, result.output
    assert not user_install.exists()
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == ["--user disable --now sightd", "--user daemon-reload"]
    assert f"done: rm {user_install}" in result.output


def test_service_uninstall_that_systemctl_refuses_keeps_the_unit_and_prints_the_commands(
    user_install, tmp_path
):
    # given a systemctl that cannot reach the user's systemd
    (tmp_path / "systemctl.status").write_text("1")
    # when the user uninstalls the service
    result = CliRunner().invoke(main, ["service", "uninstall", "--user"])
    # then nothing is removed, and the error and the three commands to run are printed
    assert result.exit_code == 1
    assert user_install.exists()
    assert result.stderr.splitlines() == [
        "Error: `systemctl --user disable --now sightd` failed: Failed to connect to bus: "
        "No medium found; to finish, run:"
    ]
    assert result.stdout.splitlines() == [
        "  systemctl --user disable --now sightd",
        f"  rm {user_install}",
        "  systemctl --user daemon-reload",
    ]


def test_service_uninstall_from_a_unit_dir_only_removes_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    units = tmp_path / "units"
    assert CliRunner().invoke(main, ["service", "install", "--unit-dir", str(units)]).exit_code == 0
    result = CliRunner().invoke(main, ["service", "uninstall", "--unit-dir", str(units)])
    assert result.exit_code == 0, result.output
    assert list(units.iterdir()) == []


def test_service_uninstall_leaves_a_unit_sightd_did_not_write(tmp_path):
    (tmp_path / "sightd.service").write_text("[Unit]\nDescription=someone else's\n")
    result = CliRunner().invoke(main, ["service", "uninstall", "--unit-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {tmp_path}/sightd.service was not written by sightd; remove it yourself\n"
    )
    assert (tmp_path / "sightd.service").exists()


def test_service_uninstall_without_a_unit_says_there_is_nothing_to_remove(tmp_path):
    result = CliRunner().invoke(main, ["service", "uninstall", "--unit-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == f"Error: no {tmp_path}/sightd.service: nothing to uninstall\n"


def test_the_unit_in_docs_is_the_template_rendered():
    assert (REPO / "docs" / "sightd.service").read_text() == render_unit(**DOCS_VALUES)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_accepts_every_line_of_the_unit(tmp_path):
    unit = tmp_path / "sightd.service"
    folders = {"writable": {f"{tmp_path}/my data": "a path with a space"}}
    folders["read_only"] = {f"{tmp_path}/models": "a read-only one"}
    unit.write_text(render_unit(f"{sys.executable} -m sightd run", str(tmp_path), **folders))
    assert f"ReadWritePaths=-{tmp_path}/my\\x20data" in unit.read_text().splitlines()
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    problems = [line for line in result.stderr.splitlines() if str(unit) in line]
    assert problems == []


def test_status_table_shows_figures_labels_and_a_given_up_child():
    heard = {
        "capture:cam0": {"component": "capture:cam0", "state": "online", "fps": 10.0},
        "infer": {
            "state": "online",
            "fps": 9.8,
            "dropped": 3,
            "latency_ms": 12.4,
            "labels": {"cam0": "thumbs_up"},
        },
        "supervisor": {
            "state": "online",
            "given_up": ["subscriber:mqtt"],
            "children": {
                "capture:cam0": {"state": "running", "restarts": 1, "last_failure": ""},
                "infer": {"state": "running", "restarts": 0},
                "subscriber:mqtt": {
                    "state": "given-up",
                    "restarts": 5,
                    "last_failure": "exited with code 1",
                },
            },
        },
    }
    lines = format_status(heard)
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["infer"][:6] == ["infer", "online", "9.8", "3", "12", "ms"]
    assert rows["capture:cam0"][:3] == ["capture:cam0", "online", "10.0"]
    assert "restarts 1" in " ".join(rows["capture:cam0"])
    assert rows["subscriber:mqtt"][1] == "given-up"
    assert "last failure: exited with code 1" in " ".join(rows["subscriber:mqtt"])
    assert "supervisor: online, given up on: subscriber:mqtt" in lines
    assert "label cam0: thumbs_up" in lines


def test_status_with_nothing_running_says_so_in_one_line(config_file):
    result = CliRunner().invoke(main, ["status", "-c", str(config_file()), "--seconds", "0.5"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no status heard in 0.5 s")
    assert len(result.output.strip().splitlines()) == 1


def test_run_with_a_folder_for_a_model_says_what_to_set(config_file, tmp_path):
    # (a missing model is a warning: the worker waits for one, tests/test_new_user.py)
    config = config_file(model={"path": str(tmp_path)})
    result = CliRunner().invoke(main, ["run", "-c", str(config)])
    assert result.exit_code == 1
    assert (
        result.output
        == f"Error: model.path {tmp_path} is a folder; set it to a model.safetensors\n"
    )


def test_run_stops_at_an_unknown_subscriber_type_before_starting_anything(config_file):
    config = config_file(subscribers=[{"type": "carrier-pigeon"}])
    result = CliRunner().invoke(main, ["run", "-c", str(config)])
    assert result.exit_code == 1
    assert "subscribers[0].type: unknown subscriber type 'carrier-pigeon'" in result.output
