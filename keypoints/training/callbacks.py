"""Callbacks: the tutorial's EarlyStopping, which hands back the best weights, the run history, and
the hook for work after a run has ended."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytorch_lightning as pl


class EarlyStopping(pl.callbacks.EarlyStopping):
    """Lightning's early stopping that, when training ends, leaves the model at its best epoch."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.best_weights, self.best_epoch, self._seen_best, self._best_step = None, None, None, None

    def _run_early_stopping_check(self, trainer):
        super()._run_early_stopping_check(trainer)  # Lightning calls this once per epoch when fitting
        if math.isfinite(self.best_score.item()) and self.best_score.item() != self._seen_best:
            self._seen_best = self.best_score.item()
            self.best_epoch, self._best_step = trainer.current_epoch, trainer.global_step
            self.best_weights = {k: v.detach().clone() for k, v in trainer.lightning_module.state_dict().items()}

    def on_fit_end(self, trainer, pl_module):
        if self.best_weights is not None:
            pl_module.load_state_dict(self.best_weights)

    def state_dict(self):
        return {**super().state_dict(), "best_epoch": self.best_epoch, "best_weights": self.best_weights}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # Saved at the best step (as ModelCheckpoint saves), the best weights are the checkpoint's own
        # state_dict: a marker instead of a second copy keeps checkpoints a third smaller.
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is not None and self._best_step == trainer.global_step:
            state["best_weights"] = "state_dict"

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is not None and isinstance(state.get("best_weights"), str):
            state["best_weights"] = {k: v.clone() for k, v in checkpoint["state_dict"].items()}

    def load_state_dict(self, state_dict):
        state = copy.copy(state_dict)
        self.best_epoch, self.best_weights = state.pop("best_epoch", None), state.pop("best_weights", None)
        super().load_state_dict(state)
        self._seen_best = self.best_score.item()


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
