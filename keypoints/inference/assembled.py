"""Several trained nets as one model of their keypoint set, with flip test-time augmentation."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from keypoints.core import codec, keypointset
from keypoints.data.augment import mirror_offsets, unmirror_predictions


class Assembled(nn.Module):
    """Several runs' nets, all of one keypoint set and face size, as one model: faces (N, 1, size, size)
    in [0, 1] -> keypoints (N, len(columns)) in pixels, `columns` in the set's order. Each column comes
    from the narrowest net that predicts it (a specialist over `all`). With `flip`, each net's
    prediction is averaged with its prediction for the mirrored face, mirrored back with that net's
    flip_indices and mirror offsets (test-time augmentation)."""

    def __init__(
        self,
        nets: list[nn.Module],
        columns: list[list[str]],
        flip_indices: list[list],
        flip: bool,
        keypoint_set: keypointset.KeypointSet,
        size: int,
        mirror: list[dict] | None = None,
    ):
        super().__init__()
        self.nets, self.flip, self.keypoint_set, self.size = nn.ModuleList(nets), flip, keypoint_set, size
        source = {}  # column -> position in the nets' concatenated outputs; narrower nets come later and win
        offsets = np.cumsum([0] + [len(c) for c in columns])
        for i in sorted(range(len(nets)), key=lambda i: -len(columns[i])):
            source.update({c: offsets[i] + j for j, c in enumerate(columns[i])})
        self.columns = [c for c in keypoint_set.columns if c in source]
        self.register_buffer("take", torch.tensor([source[c] for c in self.columns]), persistent=False)
        self.flip_indices = [[tuple(p) for p in pairs] for pairs in flip_indices]
        self.mirror = [mirror_offsets(m, c, size) for m, c in zip(mirror or [None] * len(nets), columns)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for net, pairs, offset in zip(self.nets, self.flip_indices, self.mirror):
            y = net(x).float()
            if self.flip:
                y = (y + unmirror_predictions(net(x.flip(-1)).float(), pairs, offset)) / 2
            outputs.append(y)
        return codec.to_pixels(torch.cat(outputs, 1)[:, self.take], self.size)

    def predict(self, x: torch.Tensor, batch_size: int) -> np.ndarray:
        """Keypoints in pixels (N, len(columns)) for faces x, in batches on the model's device."""
        device = next(self.parameters()).device
        with torch.inference_mode():
            return torch.cat([self(b.to(device)).cpu() for b in x.split(batch_size)]).numpy()
