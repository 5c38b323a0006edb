"""`sightd collect`: a class folder filled from a capture source, numbered, never overwritten."""

from __future__ import annotations

import cv2
from click.testing import CliRunner
from conftest import color_frame, write_video

from sightd.cli import main


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
