"""The one preprocessing: a frame alone and the same frame in a batch become the same input."""

import numpy as np
import pytest
import torch

from sightd.preprocessing import crop_roi, normalize, preprocess, preprocess_numpy, resize_rgb


def _frames(count: int, shape=(48, 80)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8) for _ in range(count)]


def test_one_frame_gives_the_same_input_alone_and_in_a_batch():
    frames = _frames(3)
    batch = preprocess(frames, size=32)
    for i, frame in enumerate(frames):
        assert torch.equal(preprocess(frame, size=32)[0], batch[i])


def test_input_is_float_chw_at_the_image_size_within_the_normalised_range():
    batch = preprocess(_frames(2, shape=(480, 640)), size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert batch.shape == (2, 3, 64, 64)
    assert batch.dtype == torch.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0


def test_colours_arrive_as_rgb_and_black_and_white_hit_the_ends_of_the_range():
    # given a pure blue BGR frame (OpenCV's order), a black and a white one
    blue = np.zeros((20, 30, 3), np.uint8)
    blue[..., 0] = 255
    black, white = np.zeros_like(blue), np.full_like(blue, 255)

    out = preprocess([blue, black, white], size=16, mean=(0.5,) * 3, std=(0.5,) * 3)

    # then blue is the third (B of RGB) channel, black is -1 everywhere and white +1
    assert torch.allclose(out[0, 2], torch.ones(16, 16))
    assert torch.allclose(out[0, :2], -torch.ones(2, 16, 16))
    assert torch.allclose(out[1], -torch.ones(3, 16, 16))
    assert torch.allclose(out[2], torch.ones(3, 16, 16))


def test_mean_and_std_are_applied_per_channel():
    grey = np.full((1, 8, 8, 3), 102, np.uint8)  # 0.4 of full scale
    out = normalize(torch.from_numpy(grey), mean=(0.4, 0.2, 0.0), std=(1.0, 0.5, 0.2))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.0, 0.4, 2.0]), atol=1e-6)


def test_resize_keeps_uint8_and_makes_any_frame_square():
    for shape in [(480, 640), (10, 7), (64, 64)]:
        out = resize_rgb(_frames(1, shape)[0], 64)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("shape", [(480, 640), (720, 1280), (37, 53), (64, 64), (200, 90)])
@pytest.mark.parametrize(
    "roi", [None, (0.0, 0.0, 1.0, 1.0), (0.25, 0.1, 0.5, 0.6), (0.9, 0.9, 0.1, 0.1)]
)
def test_the_numpy_path_gives_the_torch_paths_tensor(shape, roi):
    """Given random frames of several sizes and a camera roi, the numpy preprocessing that
    every engine is fed gives the tensor the torch path gives (the trainer's normalize)."""
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    frames = [crop_roi(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), roi) for _ in range(3)]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    served = preprocess_numpy(frames, 64, mean, std)

    small = torch.from_numpy(np.stack([resize_rgb(frame, 64) for frame in frames]))
    expected = normalize(small, mean, std).numpy()
    assert served.dtype == np.float32 and served.flags.c_contiguous
    assert served.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)
    assert torch.equal(preprocess(frames, 64, mean, std), torch.from_numpy(served))
