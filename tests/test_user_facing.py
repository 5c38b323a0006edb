"""Small things a new user hit: what reaches the terminal, and what does not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("source", ["0", "'rtsp://127.0.0.1:1/nothing-listens'"])
def test_opencv_and_ffmpeg_warnings_do_not_reach_the_user(source):
    # given no camera at index 0 and no RTSP server on port 1, when OpenCV is asked for them
    # after sightd is imported
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    code = f"import sightd, cv2; print(cv2.VideoCapture({source}).isOpened())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    # then sightd's own message is all there is: no "[ WARN:0@...]" from OpenCV, no
    # "[tcp @ 0x...] Connection ... refused" from FFmpeg
    assert result.stdout.strip() == "False"
    assert result.stderr == "", result.stderr


def test_subscribe_says_where_it_waits_and_why_nothing_comes(config_file, monkeypatch, caplog):
    import logging

    import zmq

    import sightd.client as client
    from sightd.config import load_config

    monkeypatch.setattr(client, "QUIET_WARNING", 0.5)
    config = load_config(config_file())
    labels = config.transport.labels
    caplog.set_level(logging.INFO, logger="sightd.client")
    # given nothing bound at the labels endpoint: a wrong port, or sightd not running
    assert list(client.subscribe("label", config=config, timeout=1.2)) == []
    assert f"waiting for label messages on {labels}" in caplog.text
    assert f"{labels}: not connected" in caplog.text
    caplog.clear()
    # given a publisher there that publishes nothing
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind(labels)
    try:
        assert list(client.subscribe("label", config=config, timeout=1.5)) == []
    finally:
        pub.close(linger=0)
    assert f"{labels}: connected, but nothing was published there" in caplog.text


def test_a_taken_port_is_one_error_naming_the_address_once(config_file, color_checkpoint):
    import zmq

    from sightd.config import load_config

    config = config_file(
        cameras=[{"name": "cam0", "source": "synthetic", "fps": 2}],
        model={"path": str(color_checkpoint), "device": "cpu"},
    )
    taken = load_config(config).transport.status
    squatter = zmq.Context.instance().socket(zmq.PUB)
    squatter.bind(taken)  # given another program on the status port
    try:
        result = subprocess.run(
            [sys.executable, "-m", "sightd", "run", "-c", str(config)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        squatter.close(linger=0)
    output = result.stdout + result.stderr
    # then sightd stops with one error that names the address once, and logs no stopping of
    # children that never started
    assert result.returncode != 0
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].count(taken.removeprefix("tcp://")) == 1, output
    assert "stopping" not in output.replace("sightd stopped", ""), output
