"""benchmarks/photos.py's score, which benchmarks/reframe.py shares: errors scaled to an inter-ocular
distance of 36.1 px, RMSE over the labelled coordinates of the faces found."""

import numpy as np

from benchmarks.photos import score


def test_the_score_scales_by_the_eyes_and_skips_unfound_faces_and_unlabelled_keypoints():
    truth = np.zeros((2, 15, 2))
    truth[:, 1] = (72.2, 0)  # the eye centres 72.2 px apart: errors count half
    truth[:, 3:] = np.arange(24).reshape(12, 2)
    truth[0, 7] = np.nan  # an unlabelled keypoint
    predicted = truth[0] + (2.0, 0.0)  # 2 px off in x: 1 px scaled, in every x and no y
    found = [np.nan_to_num(predicted, nan=1e6), None]  # the second face was not found
    assert np.isclose(score(found, truth), np.sqrt(0.5))
