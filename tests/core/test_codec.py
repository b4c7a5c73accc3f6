"""The codec: pixels <-> targets both ways, for numpy and torch alike, and the mirror image of targets."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from keypoints.core import codec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("size", [96, 97, 224])
def test_the_corners_centre_and_far_edge_are_minus_one_zero_and_one(size):
    np.testing.assert_array_equal(codec.to_targets(np.array([0.0, size / 2, size]), size), [-1, 0, 1])
    np.testing.assert_array_equal(codec.to_pixels(np.array([-1.0, 0, 1]), size), [0, size / 2, size])
    assert codec.scale(size) == size / 2  # an RMSE of 1 target unit is half the face's side


@pytest.mark.parametrize("size", [96, 97, 224])
def test_pixels_to_targets_and_back_is_the_round_trip(size):
    px = np.random.default_rng(size).uniform(-10, size + 10, (50, 30))
    np.testing.assert_allclose(codec.to_pixels(codec.to_targets(px, size), size), px, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_and_torch_give_the_same_bits_in_their_dtype(dtype):
    px = np.random.default_rng(0).uniform(0, 96, (20, 30)).astype(dtype)
    t = codec.to_targets(px, 96)
    assert t.dtype == dtype and codec.to_pixels(t, 96).dtype == dtype
    assert np.array_equal(codec.to_targets(torch.from_numpy(px), 96).numpy(), t)
    assert np.array_equal(codec.to_pixels(torch.from_numpy(t), 96).numpy(), codec.to_pixels(t, 96))


def test_a_mirrored_face_mirrored_again_is_the_face():
    pairs = [(0, 2), (1, 3)]  # two keypoints, left and right: their x and y columns swap
    mirror = lambda t: (t * codec.mirror_signs(t.shape[1]))[:, codec.flip_permutation(t.shape[1], pairs)]
    px = np.array([[30.0, 40, 66, 41, 48, 70]])  # left eye, right eye, mouth on a 96 px face
    mirrored = mirror(codec.to_targets(px, 96))
    # The mirror image in pixels (x -> size - x) with left and right swapped: the same face, mirrored.
    np.testing.assert_array_equal(codec.to_pixels(mirrored, 96), [[30, 41, 66, 40, 48, 70]])
    np.testing.assert_array_equal(mirror(mirrored), codec.to_targets(px, 96))


def test_the_codec_needs_no_torch():
    code = "import sys\nsys.modules['torch'] = None\nfrom keypoints.core import codec\nprint(codec.to_pixels(0.5, 96))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "72.0", proc.stderr
