"""Small things a new user hit: what reaches the terminal, and what does not."""

from __future__ import annotations

import os
import subprocess
import sys


def test_opencv_warnings_do_not_reach_the_user():
    # given no camera at index 0, when OpenCV is asked for it after sightd is imported
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    code = "import sightd, cv2; print(cv2.VideoCapture(0).isOpened())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    # then sightd's own message is all there is: no "[ WARN:0@...]" lines from OpenCV
    assert result.stdout.strip() == "False"
    assert "WARN" not in result.stderr, result.stderr


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
