"""Callbacks: the tutorial's EarlyStopping, which hands back the best weights (its Judge of each epoch
judges packed specialists' epochs too), the run history, and the hook for work after a run has ended."""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn


class Judge:
    """The judge of each epoch's validation, for every training loop (Lightning's, through EarlyStopping
    below, and the packed specialists' own): did the monitored value improve (its weights are then
    kept), and should training stop. Lightning 2.6's early-stopping rule, decision for decision."""

    def __init__(
        self, monitor: str, mode: str = "min", patience: float = 3, min_delta: float = 0.0, check_finite: bool = True
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode: 'min' or 'max', not {mode!r}")
        self.monitor, self.mode, self.patience, self.check_finite = monitor, mode, patience, check_finite
        self.better = torch.lt if mode == "min" else torch.gt
        # Signed as Lightning's: an improvement must beat the best by more than |min_delta|.
        self.min_delta = min_delta if mode == "max" else -min_delta
        self.best_score = torch.tensor(math.inf if mode == "min" else -math.inf)
        self.wait_count = 0
        self.best_epoch, self.best_step, self.best_weights = None, None, None

    def verdict(self, value, epoch: int, step: int, module: torch.nn.Module) -> bool:
        """Whether training should stop after epoch `epoch` (its last optimiser step `step`), whose
        validation gave `value` of the monitor; where it improved, `module`'s weights are kept."""
        current = torch.as_tensor(value).squeeze()  # as Lightning compares: in the logged value's dtype
        if self.check_finite and not torch.isfinite(current):
            return True
        if self.better(current - self.min_delta, self.best_score.to(current.device)):
            self.best_score, self.wait_count = current, 0
            self.best_epoch, self.best_step = epoch, step
            self.best_weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
            return False
        self.wait_count += 1
        return self.wait_count >= self.patience


class EarlyStopping(Judge, pl.Callback):
    """Early stopping in Lightning's loop, judged as Lightning's own EarlyStopping judges (Judge), that
    leaves the model at its best epoch when training ends. Its checkpointed state is Lightning's
    EarlyStopping's, under the same key: runs checkpointed by either resume with the other.

    Unlike Lightning's own, it is called at a training epoch's end before the LightningModule's hook,
    not after: the monitor must be logged by then (valid_loss is, in validation)."""

    def __init__(self, monitor: str, **judged):
        super().__init__(monitor, **judged)
        self.stopped_epoch = 0

    @property
    def state_key(self) -> str:
        return "EarlyStopping" + repr({"monitor": self.monitor, "mode": self.mode})

    def setup(self, trainer, pl_module, stage):
        # As Lightning's: at the training epoch's end where each epoch validates once, else after each validation.
        self.each_epoch = trainer.val_check_interval == 1.0 and trainer.check_val_every_n_epoch == 1

    def on_train_epoch_end(self, trainer, pl_module):
        if self.each_epoch:
            self.check(trainer)

    def on_validation_end(self, trainer, pl_module):
        if not self.each_epoch:
            self.check(trainer)

    def check(self, trainer) -> None:
        """Judge the epoch when fitting, as Lightning's own: not in the sanity check, nor in a fast_dev_run."""
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or trainer.fast_dev_run:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise RuntimeError(f"EarlyStopping monitors {self.monitor}, which is not logged (logged: {list(metrics)})")
        stop = self.verdict(metrics[self.monitor], trainer.current_epoch, trainer.global_step, trainer.lightning_module)
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)  # one process stopping stops all (DDP)
        trainer.should_stop = trainer.should_stop or stop
        if stop:
            self.stopped_epoch = trainer.current_epoch

    def on_fit_end(self, trainer, pl_module):
        if self.best_weights is not None:
            pl_module.load_state_dict(self.best_weights)

    def state_dict(self):
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": self.best_score,
            "patience": self.patience,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
        }

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # Saved at the best step (as ModelCheckpoint saves), the best weights are the checkpoint's own
        # state_dict: a marker instead of a second copy keeps checkpoints a third smaller.
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is not None and self.best_step == trainer.global_step:
            state["best_weights"] = "state_dict"

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is not None and isinstance(state.get("best_weights"), str):
            state["best_weights"] = {k: v.clone() for k, v in checkpoint["state_dict"].items()}

    def load_state_dict(self, state_dict):
        self.wait_count, self.stopped_epoch = state_dict["wait_count"], state_dict["stopped_epoch"]
        self.best_score, self.patience = state_dict["best_score"], state_dict["patience"]
        # none in the checkpoint of a run that Lightning's own EarlyStopping stopped
        self.best_epoch, self.best_weights = state_dict.get("best_epoch"), state_dict.get("best_weights")


class RunEnd(pl.Callback):
    """A callback with a hook for after a run has written its metrics.json, packed runs' included."""

    def on_run_end(self, run: Path, datamodule) -> None:
        raise NotImplementedError


class History(pl.Callback):
    """Per-epoch train loss, valid loss, valid RMSE and, where the run has them, valid NME and failure
    rate (keypoints.training.metrics), for metrics.json and learning-curve plots."""

    KEYS = ("train_loss", "valid_loss", "valid_rmse_px", "valid_nme_pct", "valid_failure_pct")

    def __init__(self):
        self.epochs: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        self.epochs.append(
            {"epoch": trainer.current_epoch, **{k: float(metrics[k]) for k in self.KEYS if k in metrics}}
        )

    def state_dict(self):
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict):
        self.epochs = list(state_dict["epochs"])
