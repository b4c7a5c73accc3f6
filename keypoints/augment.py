"""Augmentation on whole batches, on the batch's device: the tutorial's FlipBatchIterator."""
from __future__ import annotations

import torch


class Flip:
    """Mirror a random half of the batch: x targets negated, left/right `flip_indices` pairs swapped.

    Targets are scaled to [-1, 1] around the image centre, so mirroring x is a sign change; the
    presence mask is permuted with the targets so a missing keypoint stays missing.
    """

    def __init__(self, flip_indices: list[list[int]], p: float = 0.5):
        self.p = p
        self.flip_indices = [tuple(pair) for pair in flip_indices]

    def permutation(self, n_outputs: int) -> torch.Tensor:
        perm = torch.arange(n_outputs)
        for a, b in self.flip_indices:
            perm[a], perm[b] = b, a
        return perm

    def mirror(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor):
        """Mirror every sample of the batch."""
        perm = self.permutation(y.shape[1]).to(y.device)
        sign = torch.ones(y.shape[1], device=y.device, dtype=y.dtype)
        sign[0::2] = -1  # columns alternate x, y
        return x.flip(-1), (y * sign)[:, perm], mask[:, perm]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor):
        chosen = torch.rand(len(x), device=x.device) < self.p
        fx, fy, fm = self.mirror(x, y, mask)
        pick = lambda a, b: torch.where(chosen.view(-1, *[1] * (a.dim() - 1)), a, b)
        return pick(fx, x), pick(fy, y), pick(fm, mask)
