"""The benchmarks' camera-like set generator: a folder per class of webcam-like JPEGs, the same
bytes for the same seed, and frames that differ from one another as camera pictures do."""

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "camera_set.py"
_SPEC = importlib.util.spec_from_file_location("camera_set", _PATH)
camera_set = importlib.util.module_from_spec(_SPEC)
sys.modules["camera_set"] = camera_set  # dataclasses look their module up there
_SPEC.loader.exec_module(camera_set)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_a_set_is_a_folder_per_class_of_640x480_jpegs(tmp_path):
    # when a set of two a class is written
    root = camera_set.write_camera_set(tmp_path / "set", per_class=2, seed=0)

    # then each class has its folder with two webcam-sized frames
    assert sorted(p.name for p in root.iterdir()) == sorted(camera_set.GESTURES)
    for name in camera_set.GESTURES:
        frames = sorted((root / name).iterdir())
        assert len(frames) == 2
        for path in frames:
            assert path.read_bytes()[:2] == b"\xff\xd8"  # a JPEG
            assert cv2.imread(str(path)).shape == (480, 640, 3)


def test_the_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path):
    classes = ("point", "brick")  # a gesture and a texture
    first = _files(camera_set.write_camera_set(tmp_path / "a", 2, seed=7, classes=classes))
    again = _files(camera_set.write_camera_set(tmp_path / "b", 2, seed=7, classes=classes))
    other = camera_set.write_camera_set(tmp_path / "c", 2, seed=8, classes=classes)

    assert first == again
    assert not set(first.values()) & set(_files(other).values())


def test_a_smaller_set_is_the_start_of_a_larger_one(tmp_path):
    # so that 20 a class and 50 a class of one seed differ only by the extra 30
    small = _files(camera_set.write_camera_set(tmp_path / "s", 1, seed=3, classes=("open",)))
    large = _files(camera_set.write_camera_set(tmp_path / "l", 2, seed=3, classes=("open",)))
    assert small.items() <= large.items()


@pytest.mark.parametrize("name", camera_set.GESTURES + camera_set.DOORS + camera_set.TEXTURES)
def test_frames_of_a_class_differ_in_framing_light_and_background(name):
    # a gesture in one of the same few places and people, as write_camera_set shows them
    setting = camera_set.make_setting(places=1, people=1)
    rngs = [camera_set.frame_rng(0, name, i) for i in range(2)]
    frames = [camera_set.camera_frame(name, rng, setting) for rng in rngs]
    a, b = (f.astype(np.float32) for f in frames)
    assert float(np.abs(a - b).mean()) > 15  # of 255: not the same picture with new noise
    assert a.std() > 10  # not a flat frame


def test_an_unknown_class_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown class 'cat'.*fist"):
        camera_set.camera_frame("cat", np.random.default_rng(0))
