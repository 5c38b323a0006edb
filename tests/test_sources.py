"""Frame sources and the capture process: each kind and its options, plugins, failures."""

import functools
import http.server
import logging
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from conftest import COLORS, color_frame, write_video
from pipeline_support import Collector, collect, running_processes
from subscriber_harness import plugin_pythonpath

from sightd.config import CameraConfig, load_config
from sightd.errors import SightdError
from sightd.protocol import decode_image, split_topic, unpack_frame, unpack_message
from sightd.sources import (
    Source,
    SourceEnded,
    SourceError,
    describe,
    open_source,
    resolve,
    validate_cameras,
    with_source,
)
from sightd.sources.stream import FFMPEG_OPTIONS
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


# --- kinds, their options, and how a camera's kind is found ---


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        (0, "webcam"),
        ("2", "webcam"),
        ("/dev/video4", "webcam"),
        ("rtsp://cam.local/stream", "stream"),
        ("http://127.0.0.1:8080/video", "stream"),
        ("synthetic", "synthetic"),
        ("clip.avi", "file"),
    ],
)
def test_a_bare_source_tells_its_kind_as_before(source, kind):
    assert resolve(CameraConfig(source=source)).kind == kind


def test_a_folder_is_told_by_the_file_system_and_kind_overrides_the_sniffing(tmp_path):
    assert resolve(CameraConfig(source=str(tmp_path))).kind == "folder"
    # kind: webcam with a device path that sniffing alone would call a file
    camera = CameraConfig(source="/dev/v4l/by-id/usb-cam", kind="webcam")
    assert resolve(camera).kind == "webcam"


def test_explicit_kinds_play_a_video_an_image_folder_and_the_pattern(tmp_path, video):
    clip = open_source(CameraConfig(source=str(video), kind="file", loop=False))
    assert read_colours(clip, 3) == ["blue", "green", "red"]
    with pytest.raises(SourceEnded):
        clip.read(0.5)
    folder = tmp_path / "shots"
    folder.mkdir()
    for name, colour in (("1.png", "red"), ("0.png", "green")):
        cv2.imwrite(str(folder / name), color_frame(colour, (30, 40)))
    images = open_source(CameraConfig(source=str(folder), kind="folder"))
    assert read_colours(images, 3) == ["green", "red", "green"]
    pattern = open_source(CameraConfig(kind="synthetic", options={"width": 320, "height": 240}))
    assert pattern.read(0.5)[0].shape == (240, 320, 3)


def test_a_kind_that_does_not_fit_the_source_fails_clearly(tmp_path, video):
    with pytest.raises(SourceError, match="video file .* does not exist"):
        open_source(CameraConfig(source=str(tmp_path), kind="file"))
    with pytest.raises(SourceError, match="cannot list image folder"):
        open_source(CameraConfig(source=str(video), kind="folder"))


def camera_error(tmp_path, camera: dict) -> str:
    """The one-line error that validating a config with this camera gives."""
    path = tmp_path / "cameras.yaml"
    path.write_text(yaml_dump({"cameras": [{"name": "cam0", "source": 0}, camera]}))
    with pytest.raises(SightdError) as caught:
        validate_cameras(load_config(path), str(path))
    message = str(caught.value)
    assert "\\n" not in message
    return message.removeprefix(f"{path}: ")


def yaml_dump(data) -> str:
    import yaml

    return yaml.safe_dump(data)


@pytest.mark.parametrize(
    ("camera", "expected"),
    [
        (
            {"source": 0, "options": {"fourcc": "MJPEG"}},
            'cameras[1].options.fourcc: expected four ASCII characters, e.g. "MJPG" or "YUYV"',
        ),
        (
            {"source": 0, "options": {"width": "1280"}},
            "cameras[1].options.width: expected an integer",
        ),
        (
            {"source": 0, "options": {"widht": 1280}},
            "cameras[1].options.widht: not an option of kind 'webcam' "
            "(its options: width, height, fps, fourcc)",
        ),
        (
            {"source": "rtsp://cam/s", "options": {"rtsp_transport": "quic"}},
            "cameras[1].options.rtsp_transport: Input should be 'tcp' or 'udp'",
        ),
        (
            {"source": "rtsp://cam/s", "options": {"open_timeout_s": 0}},
            "cameras[1].options.open_timeout_s: Input should be greater than 0",
        ),
        (
            {"source": "clip.avi", "options": {"loop": False}},
            "cameras[1].options.loop: not an option of kind 'file' (its options: none)",
        ),
        (
            {"source": "synthetic", "kind": "webcma"},
            "cameras[1].kind: unknown source kind 'webcma'; known kinds: webcam, stream, file, "
            "folder, synthetic",
        ),
        (
            {"source": "x", "kind": "no_such_module:Source"},
            "cameras[1].kind: source kind (no_such_module:Source) failed to load: importing "
            "no_such_module raised ModuleNotFoundError",
        ),
        (
            {"source": "x", "kind": "collections:OrderedDict"},
            "cameras[1].kind: source kind (collections:OrderedDict) is not a subclass of "
            "sightd.sources.base.Source",
        ),
    ],
)
def test_a_wrong_kind_or_option_is_one_line_naming_the_yaml_path(tmp_path, camera, expected):
    camera = {"name": "cam1", **camera}
    assert camera_error(tmp_path, camera).startswith(expected)


def test_each_built_in_kind_is_declared_as_an_entry_point_in_pyproject():
    tomllib = pytest.importorskip("tomllib")
    from sightd.sources.registry import BUILTINS, ENTRY_POINT_GROUP

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["entry-points"][ENTRY_POINT_GROUP] == BUILTINS


def test_capture_source_flag_tells_the_kind_again_and_keeps_only_its_options():
    webcam = CameraConfig(source=0, kind="webcam", options={"width": 1280})
    assert with_source(webcam, 2).options == {"width": 1280}
    moved = with_source(webcam, "synthetic")
    assert (moved.kind, moved.options, resolve(moved).kind) == (None, {}, "synthetic")


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
        return True, color_frame("green", (72, 128))

    def release(self):
        self.released = True


@pytest.fixture
def fake_capture(monkeypatch):
    FakeVideoCapture.opened = []
    monkeypatch.setattr(cv2, "VideoCapture", FakeVideoCapture)
    return FakeVideoCapture


def first_frame(source, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = source.read(0.5)
        if got is not None:
            return got
    raise AssertionError("no frame")


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


# --- a third-party kind, installed the way a user installs a plugin ---


class Stripes(Source):
    """A kind named by "module:Class" instead of an entry point."""

    name = "stripes"

    def read(self, timeout):
        frame = np.zeros((8, 8, 3), np.uint8)
        frame[::2] = 255
        return frame, time.time()


def test_a_kind_can_be_a_module_and_class_target():
    source = open_source(CameraConfig(source="anything", kind=f"{__name__}:Stripes"))
    assert source.read(0.5)[0][0, 0, 0] == 255


@pytest.fixture
def plugin_installed(monkeypatch):
    """tests/plugin_pkg pip-installed: on this process's path and on its children's."""
    env = plugin_pythonpath()
    site = env["PYTHONPATH"].split(os.pathsep)[0]
    monkeypatch.syspath_prepend(site)
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    from sightd.sources.registry import _kind_class

    _kind_class.cache_clear()
    yield site
    _kind_class.cache_clear()


def test_a_plugin_kind_is_found_through_its_entry_point_with_its_own_options(plugin_installed):
    from sightd.sources import known_kinds

    assert known_kinds()[-1] == "checkerboard"
    camera = CameraConfig(kind="checkerboard", options={"square": 4, "width": 16, "height": 8})
    source = open_source(camera)
    first, second = source.read(0.5)[0], source.read(0.5)[0]
    assert first.shape == (8, 16, 3)
    assert first[0, :8, 0].tolist() == [255] * 4 + [0] * 4
    assert second[0, :8, 0].tolist() == [255] * 3 + [0] * 4 + [255]  # it moves
    assert describe(camera) == "checkerboard 4 px"
    with pytest.raises(SightdError, match=r"options\.square: Input should be less than or eq"):
        resolve(CameraConfig(kind="checkerboard", options={"square": 1000}), prefix="cameras[0]")


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
