"""Webcams and streams, with cv2.VideoCapture replaced by a recorder: what each asks of the
device (format, size, rate, FFmpeg options) and what it reports it was granted."""

import logging
import os
import time

import cv2
import pytest
from conftest import color_frame
from sources_support import colour_of, first_frame

from sightd.config import CameraConfig
from sightd.sources import describe, open_source
from sightd.sources.base import Jpeg
from sightd.sources.stream import FFMPEG_OPTIONS


class FakeVideoCapture:
    """Stands in for cv2.VideoCapture: records what is asked, grants what a real camera that
    has no 1920x1080 would (1280x720), and delivers frames."""

    GRANTS = {
        cv2.CAP_PROP_FRAME_WIDTH: 1280.0,
        cv2.CAP_PROP_FRAME_HEIGHT: 720.0,
        cv2.CAP_PROP_FPS: 30.0,
        cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*"MJPG")),
    }
    opened: list["FakeVideoCapture"] = []

    def __init__(self, *args):
        self.args = args
        self.env = os.environ.get(FFMPEG_OPTIONS)
        self.set_calls: list[tuple[int, float]] = []
        self.released = False
        FakeVideoCapture.opened.append(self)

    def isOpened(self):  # noqa: N802 - cv2's name
        return True

    def set(self, prop, value):
        self.set_calls.append((prop, value))
        return True

    def get(self, prop):
        return self.GRANTS.get(prop, 0.0)

    def read(self):
        time.sleep(0.01)
        frame = color_frame("green", (72, 128))
        if (cv2.CAP_PROP_CONVERT_RGB, 0) in self.set_calls:  # as V4L2 hands over MJPG unconverted
            return True, cv2.imencode(".jpg", frame)[1].reshape(1, -1)
        return True, frame

    def release(self):
        self.released = True


@pytest.fixture
def fake_capture(monkeypatch):
    FakeVideoCapture.opened = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeVideoCapture)
    return FakeVideoCapture


def test_a_webcam_asks_for_its_options_and_reports_what_it_was_granted(fake_capture, caplog):
    options = {"width": 1920, "height": 1080, "fps": 60, "fourcc": "MJPG"}
    camera = CameraConfig(name="desk", source=3, options=options)
    with caplog.at_level(logging.INFO, logger="sightd.sources"):
        source = open_source(camera)
        assert colour_of(first_frame(source)[0]) == "green"
    (capture,) = fake_capture.opened
    assert capture.args == (3,)
    asked = [call for call in capture.set_calls if call[0] != cv2.CAP_PROP_BUFFERSIZE]
    # the pixel format first (on V4L2 the sizes on offer depend on it), then size and rate
    assert asked == [
        (cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG")),
        (cv2.CAP_PROP_CONVERT_RGB, 0),  # its own JPEG, not pixels (V4L2, then FFmpeg)
        (cv2.CAP_PROP_FORMAT, -1),
        (cv2.CAP_PROP_FRAME_WIDTH, 1920),
        (cv2.CAP_PROP_FRAME_HEIGHT, 1080),
        (cv2.CAP_PROP_FPS, 60),
    ]
    assert "asked for 1920x1080, 60 fps, MJPG, granted 1280x720, 30 fps, MJPG" in caplog.text
    assert describe(camera) == "3 (1280x720, 30 fps, MJPG)"
    source.close()
    assert capture.released


def test_a_webcam_without_options_asks_for_nothing_but_a_short_queue(fake_capture):
    source = open_source(CameraConfig(name="plain", source="/dev/video7", kind="webcam"))
    first_frame(source)
    source.close()
    (capture,) = fake_capture.opened
    assert capture.args == ("/dev/video7",)
    assert capture.set_calls == [(cv2.CAP_PROP_BUFFERSIZE, 1)]


def test_a_stream_opens_with_its_transport_and_timeouts_and_keeps_the_users_ffmpeg_options(
    fake_capture, monkeypatch
):
    monkeypatch.setenv(FFMPEG_OPTIONS, "rtsp_transport;udp|stimeout;5000000")
    options = {"rtsp_transport": "tcp", "open_timeout_s": 3, "read_timeout_s": 2.5}
    camera = CameraConfig(source="rtsp://user:secret@cam.local/live", options=options)
    source = open_source(camera)
    first_frame(source)
    source.close()
    (capture,) = fake_capture.opened
    url, api, params = capture.args
    assert (url, api) == ("rtsp://user:secret@cam.local/live", cv2.CAP_FFMPEG)
    assert params == [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 3000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2500]
    assert capture.env == "stimeout;5000000|rtsp_transport;tcp"  # ours wins, theirs kept
    assert os.environ[FFMPEG_OPTIONS] == "rtsp_transport;udp|stimeout;5000000"  # restored
    assert source.stall_s == 3
    assert describe(camera) == "rtsp://***@cam.local/live"


def test_a_stream_without_a_transport_leaves_ffmpeg_its_default(fake_capture, monkeypatch):
    monkeypatch.delenv(FFMPEG_OPTIONS, raising=False)
    source = open_source(CameraConfig(source="rtsp://cam.local/live"))
    first_frame(source)
    source.close()
    assert fake_capture.opened[0].env is None
    assert fake_capture.opened[0].args[2] == [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        10_000,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        10_000,
    ]


@pytest.mark.parametrize(
    ("camera", "passed_on"),
    [
        ({"options": {"fourcc": "MJPG"}}, True),
        ({"options": {"fourcc": "MJPG"}, "resize": [64, 36]}, False),
        ({"options": {"fourcc": "MJPG"}, "encoding": "bgr24"}, False),
        ({"options": {"fourcc": "YUYV"}}, False),
    ],
    ids=["mjpg", "mjpg-resized", "mjpg-bgr24", "yuyv"],
)
def test_an_mjpg_webcam_hands_over_its_own_jpeg_unless_pixels_are_needed(
    fake_capture, camera, passed_on
):
    source = open_source(CameraConfig(name="desk", source=0, **camera))
    frame = first_frame(source)[0]
    source.close()
    assert isinstance(frame, Jpeg) == passed_on
    assert colour_of(frame) == "green"
    if passed_on:
        assert (frame.width, frame.height) == (128, 72) and frame.data[:2] == b"\xff\xd8"
    else:
        assert frame.shape == (72, 128, 3)
