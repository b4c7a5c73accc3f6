"""Faults of a run: user mistakes, diverging losses, interrupted and resumed runs.

Each ends in a message that says what happened and what to do next, and none loses what a run has
already written: checkpoints, metrics.json and TensorBoard logs stay where they are.
"""

from __future__ import annotations

import logging
import math
import random
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from keypoints.core import mistakes
from keypoints.core.errors import DataError, RunError, UserError
from keypoints.training.preflight import override_key, resumable
from keypoints.training.rundir import read_checkpoint, saved_config

log = logging.getLogger(__name__)


@contextmanager
def user_errors():
    """Turn the user's mistakes into UserError, one line (keypoints.core.mistakes); HYDRA_FULL_ERROR=1
    keeps the traceback of the mistake."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - sorted by mistakes.line
        said = mistakes.line(e)
        if said is None:
            raise
        raise UserError(said) from (e if mistakes.full_error() else None)


def resume_point(cfg: DictConfig, hydra: DictConfig) -> tuple[DictConfig, Path]:
    """For `resume=RUN_DIR`: the run's saved config, its own paths moved to where RUN_DIR is now and
    any values the command line sets on top (`trainer.max_epochs=...` to train on), and the
    checkpoint to go on from."""
    saved = saved_config(resumable(cfg, hydra))
    for override in hydra.overrides.task:
        key = override_key(override)
        if key not in ("resume", "hydra") and not key.startswith("hydra."):
            OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
    return saved, resume_checkpoint(saved)


def last_checkpoint(cfg: DictConfig) -> Path:
    """Where a run's ModelCheckpoint keeps the checkpoint of its last finished epoch."""
    return Path(cfg.callbacks.checkpoint.dirpath) / "last.ckpt"


def resume_checkpoint(cfg: DictConfig) -> Path:
    """The checkpoint a resumed run starts from: last.ckpt (the latest improving epoch's whole state,
    a link to best.ckpt), else best.ckpt where last.ckpt is missing (`rsync -r` without -l leaves
    links out) or broken; either holds the whole state at an epoch's end."""
    last = last_checkpoint(cfg)
    found = []
    for path in (last, last.with_name(f"{cfg.callbacks.checkpoint.filename}.ckpt")):
        if path.exists() and not any(path.samefile(f) for f in found):
            found.append(path)
    if not found:
        raise RunError(
            f"{last.parent}: no last.ckpt or best.ckpt: the run stopped before its first epoch ended, "
            f"or its checkpoints were not copied with it; start it again"
        )
    for path in found[:-1]:
        try:
            read_checkpoint(path)
            return path
        except DataError as e:
            broken = e
    read_checkpoint(found[-1])  # broken too: the error says so, and that nothing is left to resume from
    if len(found) > 1:
        log.warning(f"{broken}; resuming from {found[-1]}")
    return found[-1]


class RandomState(pl.Callback):
    """Checkpoints carry the random generators' states (Lightning saves none), so a resumed run
    shuffles, drops out and flips exactly as the run would have had it never stopped."""

    def state_dict(self):
        return {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict):
        torch.set_rng_state(state_dict["torch"])
        np.random.set_state(state_dict["numpy"])
        random.setstate(state_dict["python"])
        if state_dict["cuda"]:
            torch.cuda.set_rng_state_all(state_dict["cuda"])


@contextmanager
def interruptible(cfg: DictConfig):
    """Ctrl-C or SIGTERM ends training with the way to resume it and the conventional exit status.

    last.ckpt (linked to best.ckpt) holds the latest improving epoch's whole state; resuming from
    an epoch's end, not from the middle of one, is what makes a resumed run end exactly as an
    uninterrupted one.
    """
    try:
        yield
    except SystemExit as stop:  # Lightning's ending of a run stopped by Ctrl-C (exit 1) or SIGTERM
        if not isinstance(stop, SIGTERMException) and stop.code != 1:
            raise  # another's exit: submitit's, once it has requeued a preempted job (keypoints/sweeps/cluster.py)
        name = "SIGTERM" if isinstance(stop, SIGTERMException) else "Ctrl-C"
        if last_checkpoint(cfg).is_file():
            log.warning(f"{name}: training stopped; continue it with: python train.py resume={cfg.paths.output_dir}")
        else:
            log.warning(f"{name}: training stopped before its first epoch ended; there is nothing to resume")
        raise SystemExit(128 + (signal.SIGTERM if name == "SIGTERM" else signal.SIGINT)) from None


def divergence(history: list[dict]) -> str | None:
    """'valid_loss became nan at epoch 3' for the first non-finite loss in the history, else None."""
    for epoch in history:
        for key, value in epoch.items():
            if not math.isfinite(value):
                return f"{key} became {value} at epoch {epoch['epoch']}"
    return None
