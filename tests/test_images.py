"""Reduced-scale JPEG decoding: the same pixels for the model, a fraction of the work."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from conftest import color_frame

from sightd.images import jpeg_scale, read_image, reduced_shape
from sightd.preprocessing import resize_rgb
from sightd.protocol import ProtocolError, decode_image, pack_frame, unpack_frame


def photo(height: int = 480, width: int = 640) -> np.ndarray:
    """Smooth light, a disc and stripes: detail at every scale, like a camera picture."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([xx / width * 200, yy / height * 200, 60 + 40 * np.sin(xx / 9)], -1)
    image[(xx - width / 2) ** 2 + (yy - height / 2) ** 2 < (height / 4) ** 2] = (30, 200, 90)
    return np.clip(image + np.random.default_rng(0).normal(0, 5, image.shape), 0, 255).astype(
        np.uint8
    )


@pytest.mark.parametrize(
    "width, height, min_side, scale",
    [(640, 480, 64, 4), (1920, 1080, 64, 8), (1920, 1080, 224, 4), (130, 129, 64, 2),
     (100, 70, 64, 1), (640, 480, 0, 8), (64, 64, 64, 1)],
)  # fmt: skip
def test_the_scale_is_the_largest_that_keeps_both_sides_at_least_min_side(
    width, height, min_side, scale
):
    assert jpeg_scale(width, height, min_side) == scale
    assert min(reduced_shape(width, height, scale)[:2]) >= min_side


def test_a_jpeg_file_read_for_a_small_model_decodes_reduced_and_resizes_to_nearly_the_same(
    tmp_path,
):
    """Given a 640x480 JPEG, when it is read for a 64 px model, then it decodes at 160x120 and
    the 64x64 picture the model sees differs from the full decode's by a few levels at most."""
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), photo(), [cv2.IMWRITE_JPEG_QUALITY, 90])
    reduced, full = read_image(path, 64), read_image(path)
    assert reduced.shape == (120, 160, 3) and full.shape == (480, 640, 3)
    difference = np.abs(resize_rgb(reduced, 64).astype(int) - resize_rgb(full, 64).astype(int))
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 4


def test_png_files_are_never_reduced(tmp_path):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), photo())
    assert read_image(path, 64).shape == (480, 640, 3)


def test_a_wire_frame_decodes_reduced_for_the_model_and_whole_for_everyone_else():
    header, payload = unpack_frame(pack_frame("cam0", 0, photo(), 1.0))
    assert decode_image(header, payload).shape == (480, 640, 3)
    assert decode_image(header, payload, 64).shape == (120, 160, 3)
    assert decode_image(header, payload, 200).shape == (240, 320, 3)


def test_a_reduced_decode_still_refuses_a_jpeg_that_lies_about_its_size():
    header, payload = unpack_frame(pack_frame("cam0", 0, color_frame("red"), 1.0))
    with pytest.raises(ProtocolError, match="does not match"):
        decode_image({**header, "width": 320}, payload, 64)


def test_a_phone_photo_is_read_upright_as_its_exif_orientation_says(tmp_path):
    """Given a landscape JPEG whose EXIF says "turn 90 degrees clockwise" (how phones store
    portrait photos), when it is read, at full or reduced scale, then it comes back portrait."""
    from PIL import Image

    picture = photo(240, 320)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 clockwise to display
    path = tmp_path / "portrait.jpg"
    Image.fromarray(picture[..., ::-1]).save(path, exif=exif.tobytes(), quality=95)
    upright = cv2.rotate(picture, cv2.ROTATE_90_CLOCKWISE)
    full, reduced = read_image(path), read_image(path, 64)
    assert full.shape == (320, 240, 3) and reduced.shape == (160, 120, 3)
    assert np.abs(full.astype(int) - upright.astype(int)).mean() < 4


def test_a_one_channel_float_tiff_is_still_read(tmp_path):
    """OpenCV reads some depths only unchanged (float and int32 TIFFs with 1 or 4 channels)."""
    path = tmp_path / "depth.tiff"
    cv2.imwrite(str(path), np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64))
    image = read_image(path)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert image[0, 0, 0] < image[-1, -1, 0]  # the gradient survives the conversion


def test_a_huge_progressive_jpeg_is_refused_before_decoding_and_a_small_one_decodes():
    """libjpeg holds a progressive JPEG's coefficients for the whole image (432 MB at 8192^2)."""
    small = cv2.imencode(".jpg", photo(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    header, payload = unpack_frame(pack_frame("cam0", 0, photo(), 1.0))
    assert decode_image({**header}, small, 64).shape == (120, 160, 3)
    # the same bytes claiming 5000x5000 in their frame header, and a frame header that agrees
    sof = small.index(b"\xff\xc2")
    huge = small[: sof + 5] + struct.pack(">HH", 5000, 5000) + small[sof + 9 :]
    with pytest.raises(ProtocolError, match="progressive JPEG of 5000x5000 refused"):
        decode_image({**header, "width": 5000, "height": 5000}, huge, 64)
