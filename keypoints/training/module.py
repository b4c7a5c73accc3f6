"""The LightningModule: the tutorial's NeuralNet(...) — loss, metrics in pixels, optimiser."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import SingleDeviceStrategy
from torch import nn
from torchmetrics import MeanMetric

from keypoints.core import codec
from keypoints.data.augment import centre_crop
from keypoints.training.cuda_graphs import StepGraphs
from keypoints.training.metrics import NME


def masked_mean(errors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of elementwise errors over the present targets."""
    return (errors * mask).sum() / mask.sum().clamp(min=1)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the present targets; plain MSE when nothing is missing."""
    return masked_mean((pred.float() - target) ** 2, mask)


class TrainingLoss(nn.Module):
    """What training minimises for a batch: augmented, cropped to `size` (faces read with a margin,
    data.margin), through the net, the criterion over the present targets."""

    def __init__(
        self,
        net: nn.Module,
        augment: Sequence[Callable],
        criterion: Callable,
        memory_format: torch.memory_format,
        size: int,
    ):
        super().__init__()
        self.net, self.augment, self.criterion, self.memory_format = net, augment, criterion, memory_format
        self.size = size

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for transform in self.augment:
            x, y, mask = transform(x, y, mask)
        x, y, mask = centre_crop(x, y, mask, self.size)
        return masked_mean(self.criterion(self.net(x.contiguous(memory_format=self.memory_format)).float(), y), mask)


class KeypointsModule(pl.LightningModule):
    """`criterion` (elementwise, e.g. torch's MSELoss(reduction="none")) is what training minimises,
    over the present targets; validation always measures the masked MSE, hence the RMSE in pixels.
    With `averaging` (a torch AveragedModel, partially applied), a running average of the net's
    weights is updated after every optimiser step and replaces the net outside training:
    validation, prediction, the best epoch's snapshot and the checkpoints all hold it. `size`: the
    faces' side in pixels, which turns the targets' units back into pixels. With `cuda_graphs`, a
    training step on one GPU replays a CUDA graph of its loss (keypoints.training.cuda_graphs). `nme`: the positions
    of the keypoint set's normalising pair among the net's keypoints, for the NME and failure rate in
    validation (keypoints.training.metrics); None where the net predicts only one of them or neither."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable,
        scheduler: dict | None,
        criterion: Callable,
        augment: Sequence[Callable],
        channels_last: bool,
        averaging: Callable | None,
        size: int,
        cuda_graphs: bool,
        nme: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.px_per_unit = codec.scale(size)  # an RMSE in target units times this is in pixels
        self.net, self.optimizer, self.scheduler, self.augment = net, optimizer, scheduler, list(augment)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        # Never trained by the optimiser: no gradients (DDP would wait for them otherwise).
        self.averaged = averaging(self.net).requires_grad_(False) if averaging else None
        self.valid_mse = MeanMetric()
        self.training_loss = StepGraphs(
            partial(TrainingLoss, self.net, self.augment, criterion, self.memory_format, size), cuda_graphs
        )
        self.valid_nme = NME(nme) if nme is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net if self.training or self.averaged is None else self.averaged
        return net(x.contiguous(memory_format=self.memory_format))

    def on_fit_start(self):
        # DDP's gradient hooks expect the backward of its own forward: graphs on one device only.
        self.training_loss.enabled &= isinstance(self.trainer.strategy, SingleDeviceStrategy)

    def training_step(self, batch, batch_idx):
        x, y, mask = batch
        loss = self.training_loss(x, y, mask)
        # sync_dist: under DDP the epoch's value is averaged over ranks once, at the epoch's end.
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x), sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, mask = batch
        pred = self(x)
        self.valid_mse.update(masked_mse(pred, y, mask), weight=mask.sum())
        if self.valid_nme is not None:
            self.valid_nme.update(pred, y, mask)

    def on_validation_epoch_end(self):
        mse = self.valid_mse.compute()  # torchmetrics reduces over DDP ranks: the whole validation set
        self.valid_mse.reset()
        self.log("valid_loss", mse, prog_bar=False, sync_dist=True)
        self.log("valid_rmse_px", mse.sqrt() * self.px_per_unit, prog_bar=True, sync_dist=True)
        if self.valid_nme is not None:
            scores = self.valid_nme.compute()  # reduced over DDP ranks, as the MSE
            self.valid_nme.reset()
            self.log("valid_nme_pct", scores["nme_pct"], prog_bar=True, sync_dist=True)
            self.log("valid_failure_pct", scores["failure_pct"], sync_dist=True)
        self._log_epoch_as_step()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.averaged is not None:
            self.averaged.update_parameters(self.net)

    def on_train_epoch_end(self):
        self._log_epoch_as_step()

    def _log_epoch_as_step(self):
        # Lightning plots a logged "step" as the x-axis: epochs, so that nets trained on different
        # numbers of rows (the specialists) line up in TensorBoard, as in the tutorial's curves.
        self.log("step", float(self.current_epoch))

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).float()

    def configure_optimizers(self):
        optimizer = self.optimizer(self.net.parameters())
        if self.scheduler is None:
            return optimizer
        scheduler = dict(self.scheduler)
        # A per-batch schedule (one-cycle) spans every optimiser step of the run, which only the
        # Trainer knows: it depends on the data's size, max_epochs and the devices.
        steps = {"total_steps": int(self.trainer.estimated_stepping_batches)} if scheduler["interval"] == "step" else {}
        scheduler["scheduler"] = scheduler["scheduler"](optimizer, **steps)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
