"""Checkpoints paced in time. On small data an epoch takes about a second, and writing every
improving epoch's checkpoint (64 MB for net2: weights and momentum) cost a tenth of the training.
Here the newest checkpoint waits in memory and is written once `min_interval_s` has passed since
the last write, and always when training ends, however it ends: Lightning tears the strategy down
after Ctrl-C, SIGTERM and errors too. Only a killed process (SIGKILL, power loss) loses up to
`min_interval_s` of progress. (ModelCheckpoint's own `train_time_interval` saves in the middle of
an epoch, labelled with the previous epoch's valid_loss: not the best epoch's weights.)"""
from __future__ import annotations

import copy
import math
import time

from pytorch_lightning.plugins.io import TorchCheckpointIO


class PacedCheckpointIO(TorchCheckpointIO):
    def __init__(self, min_interval_s: float):
        super().__init__()
        self.min_interval_s = min_interval_s
        self.pending: dict[str, tuple[dict, object]] = {}
        self.written_at = -math.inf  # the first checkpoint is written at once: a run can be resumed early

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        # A copy: the checkpoint holds the live weights and callback states, which training goes on changing.
        self.pending[str(path)] = (copy.deepcopy(checkpoint), storage_options)
        if time.monotonic() - self.written_at >= self.min_interval_s:
            self.flush()

    def flush(self):
        """Write the checkpoints that wait in memory."""
        for path, (checkpoint, storage_options) in self.pending.items():
            super().save_checkpoint(checkpoint, path, storage_options)
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
