"""`sightd collect`: a class folder filled from a capture source, numbered, never overwritten."""

from __future__ import annotations

import cv2
import numpy as np
from click.testing import CliRunner
from conftest import color_frame, write_video

from sightd.cli import main
from sightd.sources import SourceError
from sightd.sources.stream import Stream


def collect(*args: str):
    return CliRunner().invoke(main, ["collect", *args, "--countdown", "0", "--fps", "50"])


def test_collect_records_numbered_images_and_continues_the_numbering(tmp_path):
    # given a video source and a class folder that already holds two images
    video = write_video(tmp_path / "cam.avi", [color_frame("red", (48, 64))] * 10, fps=10)
    folder = tmp_path / "data" / "red"
    folder.mkdir(parents=True)
    for name in ("0000.png", "0001.png"):
        cv2.imwrite(str(folder / name), color_frame("blue", (48, 64)))

    # when four images are collected
    result = collect(
        "red", "--source", str(video), "--count", "4", "--data", str(tmp_path / "data")
    )

    # then they are added after the existing ones, as decodable frames from the source
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:04d}.png" for i in range(6)]
    image = cv2.imread(str(folder / "0005.png"))
    assert image.shape == (48, 64, 3)
    assert image[..., 2].mean() > 150  # red, not the blue that was there before
    assert "wrote 4 images" in result.output and "(6 there now)" in result.output
    assert f"sightd train {tmp_path / 'data'}" in result.output


def test_collect_stops_when_a_recording_ends(tmp_path):
    # given a video of three frames
    video = write_video(tmp_path / "short.avi", [color_frame("green", (48, 64))] * 3, fps=10)
    # when ten images are asked for
    result = collect("green", "--source", str(video), "--count", "10", "--data", str(tmp_path))
    # then the three it has are kept and the user is told why it stopped
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "green").iterdir())) == 3
    assert "ended after 3 images" in result.output


def test_collect_refuses_a_label_that_is_not_a_folder_name(tmp_path):
    result = collect("../escape", "--source", "synthetic", "--data", str(tmp_path))
    assert result.exit_code == 2
    assert "Invalid value for LABEL" in result.output
    assert not list(tmp_path.iterdir())


def test_collect_names_a_missing_source_in_one_line(tmp_path):
    missing = tmp_path / "nope.avi"
    result = collect("x", "--source", str(missing), "--data", str(tmp_path))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: cannot record from {missing}")
    assert "Traceback" not in result.output


def test_a_camera_that_cannot_open_is_one_error_line_before_any_countdown_or_progress_bar(
    tmp_path, monkeypatch
):
    # given a stream that cannot be opened: it fails in its reader thread, on the first read
    def refuse(self):
        raise SourceError(f"cannot open {self.name}")

    monkeypatch.setattr(Stream, "_open", refuse)
    # when images are collected from it, after a countdown
    url = "rtsp://cam.local/door"
    result = CliRunner().invoke(
        main, ["collect", "door", "--source", url, "--countdown", "3", "--data", str(tmp_path)]
    )
    # then the error is all there is (stdout and stderr): no countdown, no progress bar
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"Error: cannot record from {url}: cannot open {url}"]
    assert not list(tmp_path.iterdir())


def two_halves(size=(48, 64)):
    """A frame whose left half is red and right half blue."""
    height, width = size
    left, right = (
        color_frame("red", (height, width // 2)),
        color_frame("blue", (height, width // 2)),
    )
    return np.hstack([left, right])


def test_collect_records_the_cameras_roi_as_the_worker_will_classify_it(tmp_path, config_file):
    # given a camera that films red on the left, blue on the right, and classifies the right half
    video = write_video(tmp_path / "cam.avi", [two_halves()] * 5, fps=10)
    camera = {"name": "cam0", "source": str(video), "roi": [0.5, 0.0, 0.5, 1.0]}
    config = config_file(cameras=[camera])
    # when images are collected from it
    result = collect("right", "-c", str(config), "--count", "2", "--data", str(tmp_path / "d"))
    # then they hold only the right half: blue, half as wide as the frame
    assert result.exit_code == 0, result.output
    image = cv2.imread(str(tmp_path / "d" / "right" / "0000.png"))
    assert image.shape == (48, 32, 3)
    assert image[..., 0].mean() > 150 and image[..., 2].mean() < 100  # blue, no red


def test_collect_roi_flag_overrides_the_config_and_none_records_the_whole_frame(
    tmp_path, config_file
):
    # given a camera that resizes its frames to 32x24 and classifies the right half
    video = write_video(tmp_path / "cam.avi", [two_halves()] * 5, fps=10)
    camera = {"name": "cam0", "source": str(video), "roi": [0.5, 0, 0.5, 1], "resize": [32, 24]}
    config = config_file(cameras=[camera])
    data = tmp_path / "d"

    def recorded(label: str, roi: str):
        result = collect(
            label, "-c", str(config), "--count", "1", "--data", str(data), "--roi", roi
        )
        assert result.exit_code == 0, result.output
        return cv2.imread(str(data / label / "0000.png"))

    # when --roi asks for the left half, then it is recorded from the resized frame: red, 16x24
    left = recorded("left", "0,0,0.5,1")
    assert left.shape == (24, 16, 3) and left[..., 2].mean() > 150
    # when --roi none, then the whole resized frame is recorded
    assert recorded("whole", "none").shape == (24, 32, 3)


def test_collect_refuses_a_roi_outside_the_frame_in_one_line(tmp_path):
    result = collect("x", "--source", "synthetic", "--data", str(tmp_path), "--roi", "0.8,0,0.5,1")
    assert result.exit_code == 2
    assert "Invalid value for --roi: the region must lie inside the frame" in result.output
    assert not list(tmp_path.iterdir())
