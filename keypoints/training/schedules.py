"""The tutorial's AdjustVariable: learning rate and momentum moved linearly over max_epochs."""

from __future__ import annotations

import numpy as np
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class LinearLrMomentum(LRScheduler):
    """Epoch e of `epochs` uses lr = linspace(*lr, epochs)[e] and the same for momentum.

    A torch LRScheduler, so Lightning steps it, checkpoints it and LearningRateMonitor logs it.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr: tuple[float, float],
        momentum: tuple[float, float],
        epochs: int,
        last_epoch: int = -1,
    ):
        self.lrs, self.momenta = np.linspace(*lr, epochs), np.linspace(*momentum, epochs)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        epoch = min(self.last_epoch, len(self.lrs) - 1)  # early stopping may leave, never overrun
        for group in self.optimizer.param_groups:
            group["momentum"] = float(self.momenta[epoch])
        return [float(self.lrs[epoch])] * len(self.optimizer.param_groups)
