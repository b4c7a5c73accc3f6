"""The NME and the failure rate (keypoints.training.metrics) against values computed by hand, in training's
metric (torchmetrics) and in evaluation's (numpy) alike."""

import numpy as np
import pytest
import torch

from keypoints.training.metrics import NME, face_nme, keypoint_nme, nme_pair

NAN = np.nan
# Four faces of three keypoints; the NME pair is keypoints 0 and 1.
TRUTH = np.array(
    [
        [0, 0, 10, 0, 5, 5],  # pair 10 apart
        [0, 0, 0, 20, 10, 10],  # pair 20 apart
        [0, 0, NAN, NAN, 1, 1],  # half of the pair unlabelled: no NME
        [0, 0, 8, 6, NAN, NAN],
    ]
)  # pair 10 apart, keypoint 2 unlabelled
PRED = np.array(
    [
        [3, 4, 10, 0, 5, 5],  # off by 5, 0, 0: mean 5/3 of 10 = 16.667 %, a failure
        [0, 1, 0, 20, 10, 13],  # off by 1, 0, 3: mean 4/3 of 20 = 6.667 %
        [5, 5, 5, 5, 5, 5],
        [1, 0, 8, 6, 100, 100],
    ]
)  # off by 1, 0 (keypoint 2 unlabelled): mean 0.5 of 10 = 5 %
FACES = [100 * 5 / 3 / 10, 100 * 4 / 3 / 20, NAN, 100 * 0.5 / 10]


def test_each_faces_nme_is_its_mean_distance_over_the_true_pairs_distance():
    mask = ~np.isnan(TRUTH)
    nme, has = face_nme(torch.tensor(PRED), torch.tensor(np.nan_to_num(TRUTH)), torch.tensor(mask), (0, 1))
    assert has.tolist() == [True, True, False, True]
    np.testing.assert_allclose(nme.numpy()[has.numpy()], [FACES[0], FACES[1], FACES[3]], rtol=1e-6)


def test_the_metric_gives_the_mean_nme_and_the_failure_rate_over_batches():
    metric = NME((0, 1))
    mask = torch.tensor(~np.isnan(TRUTH), dtype=torch.float32)
    truth = torch.tensor(np.nan_to_num(TRUTH), dtype=torch.float32)
    for rows in ([0, 1], [2, 3]):  # as validation batches
        metric.update(torch.tensor(PRED[rows], dtype=torch.float32), truth[rows], mask[rows])
    scores = metric.compute()
    assert scores["nme_pct"].item() == pytest.approx((FACES[0] + FACES[1] + FACES[3]) / 3, rel=1e-6)  # 9.444 %
    assert scores["failure_pct"].item() == pytest.approx(100 / 3)  # one face of three over 10 %


def test_evaluation_gives_the_same_and_each_keypoints_share():
    faces, per_keypoint = keypoint_nme(PRED.astype(float), TRUTH, (0, 1))
    np.testing.assert_allclose(faces, FACES, rtol=1e-6)
    # keypoint 0: 5/10, 1/20, 1/10; keypoint 1: 0; keypoint 2: 0/10, 3/20 (unlabelled in the fourth face)
    np.testing.assert_allclose(per_keypoint, [100 * (0.5 + 0.05 + 0.1) / 3, 0, 100 * (0 + 0.15) / 2], rtol=1e-6)


def test_the_pair_is_found_by_name_or_not_at_all():
    assert nme_pair(["a", "b", "c"], ["c", "a"]) == (2, 0)
    assert nme_pair(["a", "b"], ["a", "z"]) is None  # a specialist without the pair: no NME
