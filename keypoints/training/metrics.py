"""The metrics beside the RMSE in pixels: the NME and the failure rate, as 300-W scores landmarks.

A face's NME is the mean distance between its predicted and true keypoints (those labelled), divided
by the distance between the true points of its keypoint set's `nme` pair (ibug68: the outer eye
corners, 300-W's inter-ocular normalisation), in percent; a face without both of the pair labelled
has none. The NME of a set of faces is the mean of theirs, and the failure rate the share of them
whose NME is over 10 %, in percent. Both are scale-free: the same in a crop as in its photo.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torchmetrics import Metric

FAILURE_PCT = 10.0  # a face whose NME is over this fails (300-W's and the field's threshold)


def nme_pair(keypoints: list[str], pair: list[str]) -> tuple[int, int] | None:
    """The positions of the set's `nme` pair among `keypoints` (a run's), or None where it lacks one."""
    return (keypoints.index(pair[0]), keypoints.index(pair[1])) if set(pair) <= set(keypoints) else None


def face_nme(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, pair: tuple[int, int]):
    """Each face's NME in percent, (N,), and which faces have one (bool, N). `pred` and `target` (N, 2K)
    hold x, y of K keypoints in the same units; `mask` (N, 2K) is 1 where the target is labelled;
    `pair`: the positions of the normalising keypoints among the K."""
    n = len(pred)
    p, t = pred.float().reshape(n, -1, 2), target.float().reshape(n, -1, 2)
    labelled = mask.reshape(n, -1, 2).bool().all(-1)
    i, j = pair
    norm = (t[:, i] - t[:, j]).norm(dim=-1)
    has = labelled[:, i] & labelled[:, j] & (norm > 0)
    distance = torch.where(labelled, (p - t).nan_to_num().norm(dim=-1), 0)
    nme = distance.sum(1) / labelled.sum(1).clamp(min=1) / torch.where(has, norm, 1) * 100
    return nme, has


def keypoint_nme(pred: np.ndarray, truth: np.ndarray, pair: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """In pixels (N, 2K), NaN where unlabelled: each face's NME in percent, NaN where it has none, and
    each keypoint's mean distance in percent of the normalising distance (K,), over the faces that have one."""
    mask = ~np.isnan(truth)
    nme, has = face_nme(torch.from_numpy(pred), torch.from_numpy(np.nan_to_num(truth)), torch.from_numpy(mask), pair)
    faces = np.where(has.numpy(), nme.numpy(), np.nan)
    n = len(truth)
    t, p = truth.reshape(n, -1, 2), pred.reshape(n, -1, 2)
    norm = np.linalg.norm(t[:, pair[0]] - t[:, pair[1]], axis=1)
    with warnings.catch_warnings():  # a keypoint labelled on none of the faces: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        per_keypoint = np.nanmean(np.linalg.norm(p - t, axis=2)[has.numpy()] / norm[has.numpy(), None], 0) * 100
    return faces, per_keypoint


class NME(Metric):
    """The NME and the failure rate over the faces of every update, reduced over DDP ranks."""

    full_state_update = False

    def __init__(self, pair: tuple[int, int]):
        super().__init__()
        self.pair = pair
        for name in ("total", "faces", "failures"):
            self.add_state(name, torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        nme, has = face_nme(pred, target, mask, self.pair)
        nme = nme[has]
        self.total += nme.sum()
        self.faces += len(nme)
        self.failures += (nme > FAILURE_PCT).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        return {"nme_pct": self.total / self.faces, "failure_pct": 100 * self.failures / self.faces}
