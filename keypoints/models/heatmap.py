"""A heatmap head read out by a differentiable soft-argmax (integral regression, Sun et al. 2018).

The net draws one heatmap per keypoint; a softmax over its pixels makes it a distribution, and the
keypoint is that distribution's mean position. The output is therefore the same (N, 2K) coordinates,
x and y alternating, in the same normalised space as a regression net's, so the masked MSE, the
metrics, the flip and the submission need nothing new. Heatmap cell j of W has its centre at
(2j + 1) / W - 1: grid_sample's align_corners=False convention, under which pixel i of a face of
`size` is at (i + 0.5 - size/2) / (size/2), so a mirrored heatmap gives the mirrored x exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from keypoints.models.resnet import Backbone, conv_bn


def cell_centres(n: int, device=None) -> torch.Tensor:
    """The centres of n equal cells spanning [-1, 1]."""
    return (torch.arange(n, device=device, dtype=torch.float32) * 2 + 1) / n - 1


def soft_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """Heatmap logits (N, K, H, W) -> the mean position of each softmax-normalised map, (N, 2K) as x, y, x, y..."""
    n, k, h, w = heatmaps.shape
    p = heatmaps.float().flatten(2).softmax(-1).view(n, k, h, w)
    x = (p.sum(2) * cell_centres(w, p.device)).sum(-1)
    y = (p.sum(3) * cell_centres(h, p.device)).sum(-1)
    return torch.stack([x, y], -1).flatten(1)


class HeatmapNet(nn.Module):
    """The backbone's stages merged top-down (a feature pyramid, Lin et al. 2017: each stage projected
    to `width` channels by a 1x1 conv, the coarser sum upsampled bilinearly and added) down to the
    finest stage's resolution, a 3x3 conv, then one heatmap per keypoint by a 1x1 conv, read out by
    soft_argmax."""

    def __init__(self, n_outputs: int, backbone: Backbone, width: int):
        super().__init__()
        if n_outputs % 2:
            raise ValueError(f"net: a heatmap net predicts x, y pairs; got {n_outputs} columns")
        stride = 2 ** (len(backbone.stem) // 2)  # each stride-2 conv is followed by its ReLU
        if backbone.size % stride:  # else the heatmap's cells and the face's pixels do not line up
            raise ValueError(
                f"net: a heatmap's cells must tile the face: data.size={backbone.size} is not a "
                f"multiple of the stem's stride {stride}"
            )
        self.backbone = backbone
        self.lateral = nn.ModuleList([conv_bn(c, width, kernel=1) for c in backbone.channels])
        self.smooth = nn.Sequential(conv_bn(width, width), nn.ReLU(inplace=True))
        self.output = nn.Conv2d(width, n_outputs // 2, 1)  # last: the layer whose size follows the columns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        merged = self.lateral[-1](features[-1])
        for lateral, f in zip(self.lateral[-2::-1], features[-2::-1]):
            merged = lateral(f) + F.interpolate(merged, size=f.shape[-2:], mode="bilinear", align_corners=False)
        return soft_argmax(self.output(self.smooth(merged)))
