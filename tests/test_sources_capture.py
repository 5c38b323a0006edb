"""The capture process: paced, numbered frames; retries; plugin kinds; image folders; and a
camera's own JPEG published byte for byte where nothing needs its pixels."""

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from conftest import color_frame, write_video
from pipeline_support import Collector, collect, running_processes
from sources_support import colour_of
from subscriber_harness import plugin_pythonpath

from sightd.config import load_config
from sightd.protocol import decode_image, split_topic, unpack_frame, unpack_message
from sightd.transport import connect_subscriber


@pytest.fixture
def procs(tmp_path):
    with running_processes(tmp_path) as processes:
        yield processes


@pytest.fixture
def plugin_installed(monkeypatch):
    """tests/plugin_pkg pip-installed, on the path of the capture processes started here."""
    env = plugin_pythonpath()
    monkeypatch.syspath_prepend(env["PYTHONPATH"].split(os.pathsep)[0])
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])


def test_capture_publishes_paced_numbered_frames(config_file, procs):
    config = config_file(cameras=[{"name": "cam0", "source": "synthetic", "fps": 20, "nice": 7}])
    frames = collect("frame", config, camera="cam0")
    capture = procs.sightd("capture", "-c", config, "--fps", "10")
    first = frames.wait_for(lambda m: True, timeout=30)
    last = frames.wait_for(lambda m: m["seq"] >= first["seq"] + 5)
    assert [m["seq"] for m in frames.items] == list(range(first["seq"], last["seq"] + 1))
    assert decode_image(last, last["payload"]).shape == (480, 640, 3)
    assert {"v", "camera", "seq", "captured_at", "width", "height", "encoding"} <= set(last)
    # --fps 10 overrides the config's 20: frames are never closer than the period.
    gaps = np.diff([m["captured_at"] for m in frames.items])
    assert np.median(gaps) >= 0.09
    # Every thread (main, ZeroMQ's I/O, ...) runs at the camera's nice, below the worker's.
    assert thread_nice_values(capture.pid) == {7}


def thread_nice_values(pid: int) -> set[int]:
    """The nice value of each of the process's threads, from /proc (field 19 of stat)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return {int((t / "stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks}


def test_a_failing_source_is_retried_and_reported_without_publishing_frames(
    tmp_path, config_file, procs
):
    video = tmp_path / "later.avi"
    config = config_file(cameras=[{"name": "cam0", "source": str(video), "fps": 10}])
    loaded = load_config(config)
    endpoints = [loaded.camera_endpoint("cam0"), loaded.transport.status]  # frames, status bus
    sock = connect_subscriber(endpoints, [b"frame.", b"status."], loaded.transport)
    messages = Collector(_receive(sock))
    procs.sightd("capture", "-c", config)  # run alone, it hosts the status bus itself
    status = messages.wait_for(lambda m: m.get("attempts", 0) >= 2, timeout=30)
    assert status["state"] == "reconnecting" and str(video) in status["reason"]
    assert status["retry_in"] > 0
    assert all(m["kind"] == "status" for m in messages.items), "no frame while failing"
    # Given the file appears, when the next retry comes, then frames flow.
    write_video(video, [color_frame("blue", (60, 80))] * 5, fps=10)
    frame = messages.wait_for(lambda m: m["kind"] == "frame", timeout=15)
    assert frame["seq"] == 0
    online = messages.wait_for(lambda m: m["kind"] == "status" and m["state"] == "online")
    assert "reason" not in online


def _receive(sock: zmq.Socket):
    """Frames and status as they arrive."""
    while True:
        if sock.poll(500):
            parts = sock.recv_multipart()
            kind = split_topic(parts[0])[0]
            if kind == "frame":
                yield {"kind": kind, **unpack_frame(parts)[0]}
            else:
                yield {"kind": kind, **unpack_message(parts)[2]}


def test_capture_publishes_a_plugin_kinds_frames(plugin_installed, config_file, procs):
    options = {"square": 8}
    camera = {"name": "cam0", "kind": "checkerboard", "options": options, "encoding": "bgr24"}
    config = config_file(cameras=[camera])
    frames = collect("frame", config, camera="cam0")
    procs.sightd("capture", "-c", config)
    frame = frames.wait_for(lambda m: True, timeout=30)
    light = decode_image(frame, frame["payload"])[:, :, 0] == 255
    assert light.shape == (120, 160)
    # a checkerboard of 8 px squares (shifted by however many frames went out before)
    assert (light[:8] == light[0]).all() and (light[8:16] == ~light[0]).all()
    assert light[0].sum() == 80


def test_capture_plays_an_image_folder_in_name_order(tmp_path, config_file, procs):
    folder = tmp_path / "shots"
    folder.mkdir()
    colours = ["red", "green", "blue"] * 2
    for index, colour in enumerate(colours):
        cv2.imwrite(str(folder / f"{index}.png"), color_frame(colour, (48, 64)))
    camera = {"name": "cam0", "source": str(folder), "kind": "folder", "fps": 2, "loop": False}
    config = config_file(cameras=[camera])
    frames = collect("frame", config, camera="cam0")
    procs.sightd("capture", "-c", config)
    frames.wait_for(lambda m: m["seq"] == 5, timeout=30)
    # (the first frames may go out before the subscription is through: ZeroMQ's slow joiner,
    # slower on a loaded machine; 3 s of frames leave room for it)
    assert all(colour_of(decode_image(m, m["payload"])) == colours[m["seq"]] for m in frames.items)
    time.sleep(1.0)  # loop: false, so the folder has ended and nothing more comes
    assert [m["seq"] for m in frames.drain()][-1] == 5


@pytest.mark.parametrize(
    ("setting", "size", "as_is"),
    [
        ({}, (80, 60), True),
        ({"resize": [40, 30]}, (40, 30), False),
        ({"encoding": "bgr24"}, (80, 60), False),
    ],
    ids=["own-jpeg", "resize", "bgr24"],
)
def test_capture_publishes_an_mjpeg_files_own_bytes_unless_it_needs_the_pixels(
    tmp_path, config_file, procs, setting, size, as_is
):
    colours = ["red", "green", "blue"]
    video = write_video(tmp_path / "v.avi", [color_frame(c, (60, 80)) for c in colours], 10)
    camera = {"name": "cam0", "source": str(video), "fps": 10, "loop": True, **setting}
    config = config_file(cameras=[camera])
    frames = collect("frame", config, camera="cam0")
    procs.sightd("capture", "-c", config)
    frames.wait_for(lambda m: m["seq"] >= 8, timeout=30)
    contents = video.read_bytes()
    for message in frames.drain():
        assert (message["width"], message["height"]) == size
        assert (bytes(message["payload"]) in contents) == as_is  # the file's own JPEG, or not
        assert colour_of(decode_image(message, message["payload"])) == colours[message["seq"] % 3]


def test_a_jpeg_folder_is_published_byte_for_byte_and_labelled_right(
    tmp_path, config_file, color_checkpoint, procs
):
    folder = tmp_path / "shots"
    folder.mkdir()
    colours = ["red", "green", "blue"]
    rng = np.random.default_rng(3)
    for index, colour in enumerate(colours):
        cv2.imwrite(str(folder / f"{index}.jpg"), color_frame(colour, (48, 64), rng))
    camera = {"name": "cam0", "source": str(folder), "fps": 5, "loop": True}
    model = {"path": str(color_checkpoint), "device": "cpu"}
    config = config_file(cameras=[camera], model=model)
    frames, labels = collect("frame", config, camera="cam0"), collect("label", config)
    procs.sightd("infer", "-c", config)
    procs.sightd("capture", "-c", config)
    labels.wait_for(lambda m: m["seq"] >= 8, timeout=60)
    files = [(folder / f"{i}.jpg").read_bytes() for i in range(3)]
    for message in frames.drain():
        assert bytes(message["payload"]) == files[message["seq"] % 3]
    assert all(m["label"] == colours[m["seq"] % 3] for m in labels.drain())
