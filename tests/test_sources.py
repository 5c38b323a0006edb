"""Frame sources and the capture process: files, folders, streams, the test pattern, failures."""

import functools
import http.server
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from conftest import COLORS, color_frame, write_video
from pipeline_support import Collector, collect, running_processes

from sightd.config import CameraConfig, load_config
from sightd.protocol import decode_image, split_topic, unpack_frame, unpack_message
from sightd.publishers.sources import SourceEnded, SourceError, open_source
from sightd.transport import connect_subscriber


@pytest.fixture
def procs(tmp_path):
    with running_processes(tmp_path) as processes:
        yield processes


def colour_of(frame: np.ndarray) -> str:
    mean = frame.reshape(-1, 3).mean(axis=0)
    return min(COLORS, key=lambda name: np.abs(mean - COLORS[name]).sum())


def read_colours(source, n: int) -> list[str]:
    return [colour_of(source.read(0.5)[0]) for _ in range(n)]


@pytest.fixture
def video(tmp_path):
    frames = [color_frame(c, (60, 80)) for c in ("blue", "green", "red")]
    return write_video(tmp_path / "clip.avi", frames, fps=10)


def test_a_video_file_plays_in_order_and_ends_without_loop(video):
    source = open_source(CameraConfig(source=str(video), loop=False))
    assert read_colours(source, 3) == ["blue", "green", "red"]
    with pytest.raises(SourceEnded):
        source.read(0.5)
    source.close()


def test_a_video_file_with_loop_starts_again_at_its_end(video):
    source = open_source(CameraConfig(source=str(video), loop=True))
    assert read_colours(source, 7) == ["blue", "green", "red"] * 2 + ["blue"]
    source.close()


def test_an_image_folder_cycles_in_name_order_skipping_what_is_not_an_image(tmp_path):
    for name, colour in (("b.png", "green"), ("a.jpg", "blue"), ("c.bmp", "red")):
        cv2.imwrite(str(tmp_path / name), color_frame(colour, (30, 40)))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    source = open_source(CameraConfig(source=str(tmp_path), loop=True))
    assert read_colours(source, 4) == ["blue", "green", "red", "blue"]
    once = open_source(CameraConfig(source=str(tmp_path), loop=False))
    assert read_colours(once, 3) == ["blue", "green", "red"]
    with pytest.raises(SourceEnded):
        once.read(0.5)


def test_the_synthetic_source_moves_and_timestamps_each_frame():
    source = open_source(CameraConfig(source="synthetic"))
    (first, t1), (second, t2) = source.read(0.5), source.read(0.5)
    assert first.shape == (480, 640, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)
    assert abs(t1 - time.time()) < 1 and t2 >= t1


@pytest.mark.parametrize("kind", ["missing file", "not a video", "empty folder"])
def test_an_unopenable_source_raises_a_clear_source_error(tmp_path, kind):
    path = {"missing file": tmp_path / "nope.avi", "not a video": tmp_path / "x.avi"}
    path = path.get(kind, tmp_path)
    if kind == "not a video":
        path.write_bytes(b"definitely not a video" * 100)
    with pytest.raises(SourceError, match=str(path)):
        open_source(CameraConfig(source=str(path)))


def test_a_webcam_that_is_not_there_fails_on_read_not_on_a_hang():
    source = open_source(CameraConfig(source=97))
    deadline = time.monotonic() + 10
    with pytest.raises(SourceError, match="webcam 97"):
        while time.monotonic() < deadline:
            source.read(0.5)
    source.close()


def test_a_stream_url_is_read_by_a_thread_and_its_end_is_a_source_error(tmp_path):
    frames = [color_frame("red", (60, 80)) for _ in range(60)]
    write_video(tmp_path / "stream.avi", frames, fps=30)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = open_source(
            CameraConfig(source=f"http://127.0.0.1:{server.server_port}/stream.avi")
        )
        got = None
        while got is None:
            got = source.read(0.5)
        assert colour_of(got[0]) == "red"
        with pytest.raises(SourceError, match="read failed"):
            for _ in range(200):  # 60 frames, then the stream ends: a failure, retried
                source.read(0.5)
        source.close()
    finally:
        server.shutdown()


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
    endpoint = load_config(config).camera_endpoint("cam0")
    sock = connect_subscriber([endpoint], [b"frame.", b"status."], load_config(config).transport)
    messages = Collector(_receive(sock))
    procs.sightd("capture", "-c", config)
    status = messages.wait_for(lambda m: m.get("attempts", 0) >= 2, timeout=30)
    assert status["state"] == "reconnecting" and str(video) in status["error"]
    assert status["retry_in"] > 0
    assert all(m["kind"] == "status" for m in messages.items), "no frame while failing"
    # Given the file appears, when the next retry comes, then frames flow.
    write_video(video, [color_frame("blue", (60, 80))] * 5, fps=10)
    frame = messages.wait_for(lambda m: m["kind"] == "frame", timeout=15)
    assert frame["seq"] == 0
    online = messages.wait_for(lambda m: m["kind"] == "status" and m["state"] == "online")
    assert online["error"] is None


def _receive(sock: zmq.Socket):
    """Frames and status from one socket, in the order they were published."""
    while True:
        if sock.poll(500):
            parts = sock.recv_multipart()
            kind = split_topic(parts[0])[0]
            if kind == "frame":
                yield {"kind": kind, **unpack_frame(parts)[0]}
            else:
                yield {"kind": kind, **unpack_message(parts)[2]}
