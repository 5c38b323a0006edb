"""`sightd run --role ...`: each host supervises its share of one config's deployment."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import zmq
from click.testing import CliRunner
from conftest import free_port, wait_for
from daemon_support import colour_video
from deploy_support import Hosts, MessageLog, sightd_status, write_config

from sightd.cli import main
from sightd.config import SightdConfig
from sightd.daemon.roles import Plan, make_plan, pipeline_specs
from sightd.status import format_status

TWO_CAMERAS = {
    "cameras": [{"name": "cam0", "source": "synthetic"}, {"name": "cam1", "source": "synthetic"}],
    "subscribers": [{"type": "print"}],
}


def names(config: SightdConfig, **plan) -> list[str]:
    return [spec.name for spec in pipeline_specs(config, make_plan(config, **plan))]


def test_each_role_runs_its_own_parts_and_all_runs_every_part():
    # given a config with two cameras, a subscriber and the HTTP server
    config = SightdConfig.model_validate(TWO_CAMERAS)
    # then each role names its children; all (the default) names every one
    everything = ["capture:cam0", "capture:cam1", "infer", "subscriber:print", "http"]
    assert names(config) == everything
    assert names(config, roles=["all"]) == everything
    assert names(config, roles=["capture"]) == ["capture:cam0", "capture:cam1"]
    assert names(config, roles=["capture"], cameras=["cam1"]) == ["capture:cam1"]
    assert names(config, roles=["infer"]) == ["infer"]
    assert names(config, roles=["subscribers", "web"]) == ["subscriber:print", "http"]


def test_named_workers_are_children_of_their_own_and_the_hub_is_where_subscribers_are():
    # given two named workers
    workers = [{"name": "a", "cameras": ["cam0"]}, {"name": "b", "cameras": ["cam1"]}]
    config = SightdConfig.model_validate({**TWO_CAMERAS, "workers": workers})
    # then each is infer:<name>, and --worker picks some
    assert names(config, roles=["infer"]) == ["infer:a", "infer:b"]
    assert names(config, roles=["infer"], workers=["b"]) == ["infer:b"]
    # and only the subscribers' host hosts the buses, under the name /healthz expects
    assert make_plan(config, roles=["subscribers"]).hub and Plan().name == "supervisor"
    camera_host = make_plan(config, roles=["capture"], cameras=["cam0"])
    assert not camera_host.hub and camera_host.name == "supervisor:capture[cam0]"


def test_daemon_roles_in_the_config_is_the_default_and_flags_override_it():
    config = SightdConfig.model_validate({**TWO_CAMERAS, "daemon": {"roles": ["capture"]}})
    assert names(config) == ["capture:cam0", "capture:cam1"]
    assert names(config, roles=["infer"]) == ["infer"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--role", "gpu"], "'gpu' is not one of"),
        (["--role", "capture", "--camera", "cam9"], "no camera named 'cam9'"),
        (["--role", "infer", "--worker", "gpu"], "no worker named 'gpu'"),
        (["--role", "infer", "--camera", "cam0"], "--camera narrows the capture role"),
    ],
)
def test_a_wrong_role_camera_or_worker_is_a_one_line_error(config_file, args, message):
    path = config_file(**TWO_CAMERAS)
    result = CliRunner().invoke(main, ["run", "-c", str(path), *args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_the_roles_can_come_from_the_environment_as_a_systemd_drop_in_sets_them(config_file):
    path = config_file(**TWO_CAMERAS)
    env = {"SIGHTD_ROLE": "capture infer", "SIGHTD_WORKER": "gpu"}
    result = CliRunner().invoke(main, ["run", "-c", str(path)], env=env)
    assert result.exit_code == 1 and "no worker named 'gpu'" in result.output


@pytest.mark.parametrize(
    "command", [["run", "--role", "infer"], ["run", "--role", "capture"], ["capture"], ["infer"]]
)
def test_run_capture_and_infer_refuse_an_endpoint_beyond_loopback_without_curve(
    config_file, command
):
    # given a config whose labels are bound on every interface, without CURVE
    path = config_file(
        cameras=[{"name": "cam0", "source": "synthetic"}],
        transport={"labels": "tcp://0.0.0.0:5551"},
    )
    # when any command that binds or connects the bus starts, then it stops in one line
    result = CliRunner().invoke(main, [command[0], "-c", str(path), *command[1:]])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        f"Error: {path}: transport.labels: tcp://0.0.0.0:5551 can be reached from other "
        "machines but transport.curve is false; set transport.curve: true (docs/security.md: "
        "`sightd keys generate`), or transport.insecure_network: true on a network you trust"
    ]


def test_capture_alone_serves_beyond_loopback_once_insecure_network_says_so(config_file):
    # given camera frames bound on every interface, on a network the user says to trust
    port = free_port()
    path = config_file(
        cameras=[{"name": "cam0", "source": "synthetic", "fps": 5}],
        transport={"frames": f"tcp://0.0.0.0:{port}", "insecure_network": True},
    )
    command = [sys.executable, "-m", "sightd", "capture", "-c", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    frames = zmq.Context.instance().socket(zmq.SUB)
    try:
        frames.setsockopt(zmq.SUBSCRIBE, b"frame.cam0")
        frames.connect(f"tcp://127.0.0.1:{port}")
        # when `sightd capture` runs alone, then it is not refused and its frames arrive
        got = wait_for(lambda: frames.poll(100) and frames.recv_multipart(), 120, "a frame")
        assert got[0] == b"frame.cam0" and process.poll() is None
    finally:
        frames.close(linger=0)
        process.terminate()
        out = process.communicate(timeout=30)[0].decode(errors="replace")
    assert "can be reached from other machines" not in out


def test_a_camera_host_and_a_worker_hub_host_make_one_pipeline(tmp_path, color_checkpoint):
    # given one config, a camera host running capture and a hub running infer + subscribers
    video = colour_video(tmp_path / "colours.avi")
    log = tmp_path / "messages.jsonl"
    ports = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("labels", "status", "status_in")}
    config = write_config(
        tmp_path / "config.yaml",
        {
            "cameras": [
                {"name": "cam0", "source": str(video), "fps": 5},
                {"name": "cam1", "source": str(video), "fps": 5},
            ],
            "transport": {
                "frames": f"tcp://127.0.0.1:{free_port()}",
                **ports,
                "status_interval": 0.5,
            },
            "model": {"path": str(color_checkpoint), "device": "cpu", "reload": False},
            "subscribers": [{"type": "log", "path": str(log), "topics": ["label", "status"]}],
            "http": {"enabled": False},
        },
    )
    hosts = Hosts()
    try:
        cameras = hosts.start(tmp_path, "cameras", config, ["--role", "capture"])
        hub = hosts.start(tmp_path, "hub", config, ["--role", "infer", "--role", "subscribers"])
        messages = MessageLog(log)
        # when both run, then labels of both cameras reach the hub's subscriber
        for camera in ("cam0", "cam1"):
            messages.wait_labels(camera, 3, 0.0, 120, hosts.tails)
        # and the camera host's supervisor reports on the hub's status bus under its own name
        wait_for(lambda: messages.status("supervisor:capture"), 30, "its status", hosts.tails)
        assert {"capture:cam0", "capture:cam1"} == set(
            messages.status("supervisor:capture")[-1]["children"]
        )
        assert set(messages.status("supervisor")[-1]["children"]) == {"infer", "subscriber:log"}
        # and `sightd status` shows both supervisors with their roles, not as component rows
        shown = wait_for(
            lambda: _both_supervisors(sightd_status(config)), 60, "both in sightd status"
        )
        assert not [line for line in shown if line.startswith("supervisor:capture ")], shown

        # when the camera host's supervisor is killed (SIGKILL: no chance to clean up)
        cameras.kill(group=False)
        wait_for(lambda: not cameras.group(), 20, "the camera host's parts to die with it")
        gone = time.time()

        # then no frame is labelled after, and the hub lives on and says the cameras are quiet
        hub_status = wait_for(
            lambda: [s for s in messages.status("infer") if s["at"] > gone + 1.0],
            30,
            "the worker's status after the kill",
            hosts.tails,
        )
        assert hub.process.poll() is None and hub_status[-1]["state"] == "online"
        assert not messages.labels("cam0", gone) and not messages.labels("cam1", gone)
    finally:
        hosts.close()


def test_status_shows_each_hosts_supervisor_its_roles_and_the_cameras_a_down_worker_affects():
    # given what `sightd status` heard from a hub, a camera host and a worker host whose
    # worker a was killed and given up on
    heard = {
        "capture:cam0": {"state": "online", "fps": 5.0},
        "infer:b": {"state": "online", "fps": 5.0, "labels": {"cam1": "red"}},
        "supervisor": {"state": "online", "roles": ["subscribers"], "given_up": []},
        "supervisor:capture[cam0]": {
            "state": "online",
            "roles": ["capture"],
            "children": {"capture:cam0": {"state": "running", "restarts": 2}},
        },
        "supervisor:infer": {
            "state": "online",
            "roles": ["infer"],
            "given_up": ["infer:a"],
            "children": {
                "infer:a": {"state": "given-up", "last_failure": "exited with code -9"},
                "infer:b": {"state": "running", "restarts": 0},
            },
            "cameras_affected": {"cam0": "infer:a given-up: exited with code -9"},
        },
    }
    lines = format_status(heard)
    rows = {line.split()[0]: line for line in lines[1:] if not line.startswith("supervisor")}
    # then no supervisor is a component row: each is one line with its state and roles
    assert "supervisor:capture[cam0]" not in rows and "supervisor:infer" not in rows
    assert "supervisor: online, given up on: none; roles: subscribers" in lines
    assert "supervisor:capture[cam0]: online, given up on: none; roles: capture" in lines
    assert "supervisor:infer: online, given up on: infer:a; roles: infer" in lines
    # and the children other hosts' supervisors report are rows too, with their history
    assert "restarts 2" in rows["capture:cam0"]
    assert rows["infer:a"].split()[1] == "given-up" and "exited with code -9" in rows["infer:a"]
    # and the camera a down worker leaves unlabelled is named, with why and who says so
    affected = "camera cam0 gets no labels: infer:a given-up: exited with code -9"
    assert f"{affected} (says supervisor:infer)" in lines
    assert "label cam1: red" in lines


def _both_supervisors(output: str) -> list[str] | None:
    lines = output.splitlines()
    wanted = [
        "supervisor:capture: online, given up on: none; roles: capture",
        "supervisor: online, given up on: none; roles: infer, subscribers",
    ]
    return lines if all(line in lines for line in wanted) else None


def test_the_role_option_offers_every_role_and_all():
    from sightd.cli_options import ROLE_CHOICES
    from sightd.daemon.roles import ROLES

    assert (*ROLES, "all") == ROLE_CHOICES
