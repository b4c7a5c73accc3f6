"""Checkpoints paced in time, written atomically, and read back wherever the run directory has moved.

Pacing: on small data an epoch takes about a second, and writing every improving epoch's
checkpoint (64 MB for net2: weights and momentum) cost a tenth of the training. Here the newest
checkpoint waits in memory and is written once `min_interval_s` has passed since the last write,
and always when training ends, however it ends: Lightning tears the strategy down after Ctrl-C,
SIGTERM and errors too. Only a killed process (SIGKILL, power loss) loses up to `min_interval_s` of
progress. (ModelCheckpoint's own `train_time_interval` saves in the middle of an epoch, labelled
with the previous epoch's valid_loss: not the best epoch's weights.)

Atomic: each file is written whole beside its final name, flushed to the disk, then renamed over
the old one, so a kill at any moment leaves the previous checkpoint or the new one, never a torn
file. Renaming over best.ckpt keeps last.ckpt's link to it valid; renaming over last.ckpt replaces
the link itself, never the best.ckpt it points to. (Lightning's own writer stages the file in the
system's temporary directory: no rename where that is another file system, and no flush to disk.)
"""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from keypoints.training.rundir import relocated


def write_atomically(checkpoint: dict, path: str | Path) -> None:
    """torch.save `checkpoint` to `path`: the previous file stays until the new one is whole on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")  # one name per file: a killed write's leftover is reused
    try:
        with open(partial, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)  # the rename itself reaches the disk
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class PacedCheckpointIO(TorchCheckpointIO):
    def __init__(self, min_interval_s: float):
        super().__init__()
        self.min_interval_s = min_interval_s
        self.pending: dict[str, dict] = {}
        self.written_at = -math.inf  # the first checkpoint is written at once: a run can be resumed early

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} writes local files and takes no storage_options")
        # A copy: the checkpoint holds the live weights and callback states, which training goes on changing.
        self.pending[str(path)] = copy.deepcopy(checkpoint)
        if time.monotonic() - self.written_at >= self.min_interval_s:
            self.flush()

    def flush(self):
        """Write the checkpoints that wait in memory (none waiting: the next one is still written at once)."""
        if not self.pending:
            return
        for path, checkpoint in self.pending.items():
            write_atomically(checkpoint, path)
        self.pending.clear()
        self.written_at = time.monotonic()

    def load_checkpoint(self, path, *args, **kwargs):
        self.flush()
        return super().load_checkpoint(path, *args, **kwargs)

    def remove_checkpoint(self, path):
        self.pending.pop(str(path), None)
        super().remove_checkpoint(path)

    def teardown(self):
        self.flush()


class ModelCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint for a run directory that may have been moved or copied since
    the checkpoint was saved: the paths in its saved state (best.ckpt, last.ckpt) are taken to be
    where the checkpoint directory is now. Lightning would otherwise keep the old directory's
    best-model path and forget the best score: the next epoch would count as the best, saved to
    best-v1.ckpt beside a stale best.ckpt."""

    def load_state_dict(self, state_dict):
        saved = state_dict.get("dirpath")
        if saved and self.dirpath:
            state_dict = relocated(state_dict, saved, self.dirpath)
        super().load_state_dict(state_dict)
