"""How a camera's kind is found and its options checked: built-ins, "module:Class" and
entry-point plugins, and the one-line errors for a wrong kind or option."""

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import color_frame
from sources_support import read_colours, write_clip
from subscriber_harness import plugin_pythonpath

from sightd.config import CameraConfig, load_config
from sightd.errors import SightdError
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


@pytest.fixture
def video(tmp_path):
    return write_clip(tmp_path)


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
