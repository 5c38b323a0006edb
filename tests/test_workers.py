"""Several workers: each its own child with its own cameras, one stream through the proxy."""

from __future__ import annotations

import os
import signal
import time

from conftest import free_port, wait_for
from daemon_support import colour_video
from deploy_support import Hosts, MessageLog, sightd_status, write_config

from sightd.config import SightdConfig
from sightd.daemon.workers import worker_config


def test_a_worker_sees_only_its_cameras_on_the_endpoints_the_whole_config_gives_them():
    config = SightdConfig.model_validate(
        {
            "cameras": [{"name": n, "source": "synthetic"} for n in ("cam0", "cam1", "cam2")],
            "workers": [{"name": "a", "cameras": ["cam0"]}, {"name": "b", "cameras": ["cam2"]}]
            + [{"name": "c", "cameras": ["cam1"]}],
        }
    )
    seen = worker_config(config, "b")
    assert [c.name for c in seen.cameras] == ["cam2"]
    # cam2 is the third camera: port + 20, not transport.frames as a first camera would get
    assert seen.frame_endpoints() == ["tcp://127.0.0.1:5570"] == [config.camera_endpoint("cam2")]


def test_two_workers_split_the_cameras_and_one_dying_stops_only_its_own(tmp_path, color_checkpoint):
    # given two cameras, worker a for cam0 and worker b for cam1, no restarts (a death stays)
    video = colour_video(tmp_path / "colours.avi")
    log = tmp_path / "messages.jsonl"
    names = ("frames", "labels", "labels_in", "status", "status_in")
    config = write_config(
        tmp_path / "config.yaml",
        {
            "cameras": [
                {"name": "cam0", "source": str(video), "fps": 5},
                {"name": "cam1", "source": str(video), "fps": 5},
            ],
            "workers": [{"name": "a", "cameras": ["cam0"]}, {"name": "b", "cameras": ["cam1"]}],
            "transport": {n: f"tcp://127.0.0.1:{free_port()}" for n in names}
            | {"status_interval": 0.5},
            "model": {"path": str(color_checkpoint), "device": "cpu", "reload": False},
            "subscribers": [{"type": "log", "path": str(log), "topics": ["label", "status"]}],
            "http": {"enabled": False},
            "daemon": {"max_restarts": 0},
        },
    )
    hosts = Hosts()
    try:
        hosts.start(tmp_path, "sightd", config, [])
        messages = MessageLog(log)
        # when both run, then both cameras' labels reach the one subscriber through the proxy
        for camera in ("cam0", "cam1"):
            messages.wait_labels(camera, 3, 0.0, 120, hosts.tails)
        assert {m["model"]["hash"] for m in messages.labels("cam0")}  # a real model's labels
        workers = wait_for(lambda: _children(messages), 30, "both workers' pids", hosts.tails)
        assert {"infer:a", "infer:b"} <= set(workers)

        # when worker a is killed
        os.kill(workers["infer:a"]["pid"], signal.SIGKILL)
        killed = time.time()

        # then the supervisor's status names cam0 (and only cam0) as affected, by worker a
        affected = wait_for(
            lambda: _affected(messages, killed), 30, "status naming cam0", hosts.tails
        )
        assert list(affected) == ["cam0"] and affected["cam0"].startswith("infer:a given-up")
        # and `sightd status` says so in words: the worker's row, and the camera it leaves
        shown = wait_for(lambda: _says_affected(sightd_status(config)), 60, "cam0 in sightd status")
        assert any(line.split()[:2] == ["infer:a", "given-up"] for line in shown), shown
        # and cam1 keeps labelling while cam0 gets no label inferred after the kill
        messages.wait_labels("cam1", 5, killed, 60, hosts.tails)
        late = [m for m in messages.labels("cam0") if m["inferred_at"] > killed]
        assert late == [], late
    finally:
        hosts.close()


def _children(messages: MessageLog) -> dict | None:
    statuses = messages.status("supervisor")
    children = statuses[-1]["children"] if statuses else {}
    running = [c for c in children.values() if c["state"] == "running" and c["pid"]]
    return children if len(running) == len(children) and children else None


def _affected(messages: MessageLog, after: float) -> dict | None:
    for status in reversed(messages.status("supervisor")):
        if status["at"] > after and status.get("cameras_affected"):
            return status["cameras_affected"]
    return None


def _says_affected(output: str) -> list[str] | None:
    lines = output.splitlines()
    affected = "camera cam0 gets no labels: infer:a given-up: exited with code -9 (says supervisor)"
    return lines if affected in lines else None
