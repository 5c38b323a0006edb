"""Camera sources read directly: each built-in kind plays, ends, fails clearly, and hands over
a camera's own JPEG where the capture can pass it on."""

import functools
import http.server
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import color_frame, write_video
from PIL import Image
from sources_support import colour_of, read_colours, write_clip

from sightd.config import CameraConfig
from sightd.sources import SourceEnded, SourceError, open_source
from sightd.sources.base import Jpeg


@pytest.fixture
def video(tmp_path):
    return write_clip(tmp_path)


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


# --- a camera's own JPEG, handed over as it is ---


def test_an_mjpeg_video_hands_over_its_own_jpeg_packets_with_their_size(video):
    source = open_source(CameraConfig(source=str(video), loop=True))
    frames = [source.read(0.5)[0] for _ in range(4)]
    source.close()
    assert all(isinstance(f, Jpeg) for f in frames)
    assert {(f.width, f.height) for f in frames} == {(80, 60)}
    contents = video.read_bytes()
    assert all(f.data[:2] == b"\xff\xd8" and f.data in contents for f in frames)  # the file's own
    assert [colour_of(f) for f in frames] == ["blue", "green", "red", "blue"]


def write_jpeg(path, frame, orientation: int | None = None):
    """A JPEG file; with `orientation`, an EXIF note telling viewers to turn it."""
    image = Image.fromarray(frame[:, :, ::-1])
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, quality=90, exif=exif.tobytes())


def test_an_image_folder_hands_over_plain_jpeg_files_and_decodes_the_rest(tmp_path):
    write_jpeg(tmp_path / "a.jpg", color_frame("blue", (30, 40)))
    cv2.imwrite(str(tmp_path / "b.png"), color_frame("green", (30, 40)))
    write_jpeg(tmp_path / "c.jpg", color_frame("red", (30, 40)), orientation=6)  # turn 90°
    write_jpeg(tmp_path / "d.jpeg", color_frame("green", (30, 40)), orientation=1)
    cut = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "e.jpg").write_bytes(cut[: len(cut) // 2])  # still being copied
    source = open_source(CameraConfig(source=str(tmp_path), loop=False))
    a, b, c, d = (source.read(0.5)[0] for _ in range(4))
    assert isinstance(a, Jpeg) and a.data == (tmp_path / "a.jpg").read_bytes()
    assert (a.width, a.height) == (40, 30)
    assert isinstance(d, Jpeg) and d.data == (tmp_path / "d.jpeg").read_bytes()
    assert isinstance(b, np.ndarray) and colour_of(b) == "green"
    # EXIF rotation is applied, as when training on the same file: pixels, turned.
    assert isinstance(c, np.ndarray) and c.shape == (40, 30, 3) and colour_of(c) == "red"
    with pytest.raises(SourceEnded):  # e.jpg, half there, is neither passed on nor decoded
        source.read(0.5)


@pytest.mark.parametrize(
    "setting", [{"resize": [40, 30]}, {"encoding": "bgr24"}], ids=["resize", "bgr24"]
)
def test_sources_give_pixels_when_the_capture_needs_them(tmp_path, video, setting):
    write_jpeg(tmp_path / "a.jpg", color_frame("blue", (30, 40)))
    for path in (video, tmp_path):
        source = open_source(CameraConfig(source=str(path), **setting))
        frame = source.read(0.5)[0]
        source.close()
        assert isinstance(frame, np.ndarray) and colour_of(frame) == "blue"


def test_a_video_in_another_codec_gives_pixels(tmp_path):
    frames = [color_frame(c, (60, 80)) for c in ("red", "green")]
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"FFV1"), 10, (80, 60))
    for frame in frames:
        writer.write(frame)
    writer.release()
    source = open_source(CameraConfig(source=str(clip), loop=False))
    got = [source.read(0.5)[0] for _ in range(2)]
    assert all(isinstance(f, np.ndarray) and f.shape == (60, 80, 3) for f in got)
    assert [colour_of(f) for f in got] == ["red", "green"]
