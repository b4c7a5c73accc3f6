"""The heatmap head: the soft-argmax's coordinates, and the flip (augmentation and test-time) with it."""

import numpy as np
import pytest
import torch
from conftest import TINY_HEATMAP, compose, make_run
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from keypoints.core import keypointset
from keypoints.inference import runs as trained
from keypoints.models.heatmap import soft_argmax


@pytest.mark.parametrize("size", [24, 48])
def test_a_single_peak_gives_that_cells_centre(size):
    peaks = [(5, 17), (0, size - 1), (size // 2, 3)]  # (row, column) of each keypoint's peak
    heatmaps = torch.zeros(1, len(peaks), size, size)
    for k, (row, col) in enumerate(peaks):
        heatmaps[0, k, row, col] = 100.0  # all of the softmax's mass on one cell
    out = soft_argmax(heatmaps)
    # Cell j of `size` covers pixels j*s ... (j+1)*s - 1 of 96 (s = 96 / size): its centre, in pixels
    # ((i + 0.5) for pixel i, the convention under which the flip is px -> 96 - px), back to (px - 48) / 48.
    s = 96 / size
    expected = [
        ((c + 0.5) * s - 48) / 48 if axis == 0 else ((r + 0.5) * s - 48) / 48 for r, c in peaks for axis in (0, 1)
    ]
    assert out.shape == (1, 2 * len(peaks))
    torch.testing.assert_close(out[0], torch.tensor(expected), atol=1e-5, rtol=0)


def test_a_flat_heatmap_gives_the_centre_and_two_peaks_their_midpoint():
    torch.testing.assert_close(soft_argmax(torch.zeros(2, 3, 24, 24)), torch.zeros(2, 6), atol=1e-6, rtol=0)
    two = torch.zeros(1, 1, 24, 24)
    two[0, 0, 4, 2] = two[0, 0, 10, 20] = 100.0
    torch.testing.assert_close(soft_argmax(two)[0], torch.tensor([(11.5 / 24) * 2 - 1, (7.5 / 24) * 2 - 1]))


def test_a_mirrored_heatmap_gives_the_mirrored_position():
    # What the flip augmentation relies on: mirroring the face and negating x agree for a heatmap net.
    heatmaps = torch.randn(4, 15, 24, 24) * 3
    out, mirrored = soft_argmax(heatmaps), soft_argmax(heatmaps.flip(-1))
    torch.testing.assert_close(mirrored[:, 0::2], -out[:, 0::2], atol=1e-6, rtol=0)
    torch.testing.assert_close(mirrored[:, 1::2], out[:, 1::2], atol=1e-6, rtol=0)


def test_a_face_size_that_the_heatmap_cells_do_not_tile_is_refused():
    with pytest.raises(
        InstantiationException,
        match="a heatmap's cells must tile the face: data.size=98 is not a multiple of the stem's stride 4",
    ):
        instantiate(compose("net=heatmap", "data.size=98").net, n_outputs=30)


def test_flip_tta_of_a_heatmap_net_gives_mirrored_predictions_for_mirrored_faces(tiny_data, tmp_path):
    run = make_run(tmp_path / "run", tiny_data, net_overrides=TINY_HEATMAP)
    flipped, _ = trained.load([run], flip=True)
    plain, _ = trained.load([run])
    x = torch.rand(4, 1, 96, 96)
    a, twin = flipped.predict(x, 4), flipped.predict(x.flip(-1), 4)
    twin[:, 0::2] = 96 - twin[:, 0::2]
    for i, j in keypointset.load("kaggle15").specialist("all").flip_indices:
        twin[:, [i, j]] = twin[:, [j, i]]
    np.testing.assert_allclose(a, twin, atol=1e-3)
    assert not np.allclose(a, plain.predict(x, 4), atol=1e-3)  # the flip changed the prediction
    assert ((a > 0) & (a < 96)).all()  # a soft-argmax stays inside the image
