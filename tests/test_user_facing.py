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
