"""A residual backbone sized for small grey faces (Kaggle's 96x96) on a CPU (He et al. 2016's basic blocks), and a net
that regresses the keypoints from its coarsest features.

Strided 3x3 convolutions bring the face down to 24x24 before any residual block, so that no block
runs at full resolution, where a CPU spends most of a convolutional net's time; each stage after
the first halves the resolution and the blocks' skips carry gradients through the depth.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(in_channels: int, out_channels: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """A convolution without bias ("same" padding) followed by batch norm."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_channels)
    )


class Block(nn.Module):
    """The basic residual block: relu(x + bn(conv(relu(bn(conv(x)))))), a strided 1x1 projection on
    the skip where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(in_channels, out_channels, stride), nn.ReLU(inplace=True), conv_bn(out_channels, out_channels)
        )
        same = stride == 1 and in_channels == out_channels
        self.skip = nn.Identity() if same else conv_bn(in_channels, out_channels, stride, kernel=1)
        nn.init.zeros_(self.body[-1][1].weight)  # each block starts as its skip (Goyal et al. 2017)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class Backbone(nn.Module):
    """For size x size faces: stride-2 3x3 conv/batch norm/ReLU layers (`stem`: their channels), then
    residual stages (`channels`, `blocks` per stage), the first at the stem's resolution, each later
    one at half the previous one's. `forward` returns every stage's output, finest first."""

    def __init__(self, size: int, stem: list[int], channels: list[int], blocks: list[int]):
        super().__init__()
        if len(channels) != len(blocks) or min(blocks, default=0) < 1:
            raise ValueError(
                f"net.backbone: expected one block count >= 1 per stage of channels {list(channels)}, "
                f"got blocks {list(blocks)}"
            )
        layers, in_channels = [], 1
        for out_channels in stem:
            layers += [conv_bn(in_channels, out_channels, stride=2), nn.ReLU(inplace=True)]
            in_channels = out_channels
        self.stem = nn.Sequential(*layers)
        self.stages = nn.ModuleList()
        for i, (out_channels, n) in enumerate(zip(channels, blocks)):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            self.stages.append(
                nn.Sequential(
                    *[Block(c, out_channels, s) for c, s in zip([in_channels] + [out_channels] * (n - 1), strides)]
                )
            )
            in_channels = out_channels
        self.size, self.channels, self.sizes = size, list(channels), []
        for _ in stem:
            size = (size + 1) // 2  # a stride-2 "same" convolution
        for i in range(len(channels)):  # each stage's output height and width
            size = size if i == 0 else (size + 1) // 2
            self.sizes.append(size)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class Regression(nn.Module):
    """The backbone's coarsest feature map, flattened, to the keypoints by one Linear layer (keeping
    where each feature is, which global pooling would average away)."""

    def __init__(self, n_outputs: int, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self.output = nn.Linear(backbone.channels[-1] * backbone.sizes[-1] ** 2, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.backbone(x)[-1].flatten(1))
