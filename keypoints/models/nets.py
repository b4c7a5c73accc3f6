"""The tutorial's nets: net1's one-hidden-layer MLP and the CNN of net2...net7."""

from __future__ import annotations

from torch import nn


def mlp(n_outputs: int, size: int, hidden: int) -> nn.Sequential:
    """net1: the size x size face's pixels (96x96: 9216) -> hidden -> n_outputs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs))


def cnn(
    n_outputs: int,
    size: int,
    channels: list[int],
    kernels: list[int],
    hidden: int,
    dropout: list[float],
    batch_norm: bool,
) -> nn.Sequential:
    """net2 for size x size faces: (conv -> 2x2 max-pool -> [batch norm] -> ReLU -> dropout) per stage,
    then two dense layers -> n_outputs.

    `dropout` holds one rate per stage and one per dense layer (net6: 0.1, 0.2, 0.3, 0.5, 0).
    `batch_norm` normalises each conv's output (after the tutorial): Adam then trains far faster.
    """
    if len(dropout) != len(channels) + 2:
        raise ValueError(
            f"net.dropout: expected {len(channels) + 2} rates (one per conv stage and dense layer), got {len(dropout)}"
        )
    layers, in_channels = [], 1
    for out_channels, kernel, p in zip(channels, kernels, dropout):
        # Pooling first is the tutorial's conv -> ReLU -> pool exactly (max and ReLU commute), and
        # normalises and rectifies a quarter of the values.
        norm = [nn.BatchNorm2d(out_channels)] if batch_norm else []
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel, bias=not batch_norm),
            nn.MaxPool2d(2),
            *norm,
            nn.ReLU(),
            nn.Dropout(p),
        ]
        in_channels, size = out_channels, (size - kernel + 1) // 2
    layers += [
        nn.Flatten(),
        nn.Linear(in_channels * size * size, hidden),
        nn.ReLU(),
        nn.Dropout(dropout[-2]),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(dropout[-1]),
        nn.Linear(hidden, n_outputs),
    ]
    return nn.Sequential(*layers)


def output_layer(net: nn.Module) -> str:
    """The name prefix of the net's last Linear or convolution: the one whose size follows the columns
    (a regression net's last Linear, a heatmap net's 1x1 convolution to one map per keypoint)."""
    return [name for name, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
