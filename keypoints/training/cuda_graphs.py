"""The training step as a CUDA graph: on a GPU a step of these small nets is bound by Python and kernel
launches, not by arithmetic, so the step's kernels are recorded once and replayed.

`cuda_graphs: true` (conf/config.yaml) takes effect on a GPU with one device: torch's
make_graphed_callables records a batch's training loss (augmentation, net, criterion) and its backward
once for each batch shape (an epoch's smaller last batch gets a graph of its own), and each later step
copies the batch into the graph's inputs and replays both. The optimiser's step stays outside the graph
(a few foreach kernels), so learning-rate and momentum schedules apply as they do without it. On a CPU,
and under DDP, the step runs as it always has. A capture that fails (an operation a graph cannot
record) is reported once, and the run goes on without graphs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


class StepGraphs:
    """A batch's loss, `make_loss()(x, y, mask)` (an nn.Module sharing the trained net), through a CUDA
    graph per batch shape where `enabled` and the batch is on a GPU, else eagerly. Not an nn.Module
    itself: the net stays the LightningModule's own (its state dict, checkpoints, device moves)."""

    device_type = "cuda"  # where graphs are recorded (a test records fakes on "cpu")

    def __init__(self, make_loss: Callable[[], nn.Module], enabled: bool, capture=torch.cuda.make_graphed_callables):
        self.make_loss, self.enabled, self.capture = make_loss, enabled, capture
        self.eager = make_loss()
        self.graphs: dict[tuple, Callable | None] = {}

    def __call__(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not (self.enabled and x.device.type == self.device_type):
            return self.eager(x, y, mask)
        shape = (x.shape, y.shape)
        if shape not in self.graphs:
            self.graphs[shape] = self._record(x, y, mask)
        return (self.graphs[shape] or self.eager)(x, y, mask)

    def _record(self, x, y, mask) -> Callable | None:
        """The graphed loss for batches shaped as this one, or None (eager from then on) where it fails."""
        loss = self.make_loss()  # make_graphed_callables replaces its forward: one per shape
        # The capture's warm-up runs the loss a few times: batch norm's running statistics are put back.
        buffers = [b.detach().clone() for b in loss.buffers()]
        device = x.device.type
        try:
            # Autocast (bf16-mixed) must not cache casts while kernels are being recorded.
            with torch.autocast(
                device,
                dtype=torch.get_autocast_dtype(device),
                enabled=torch.is_autocast_enabled(device),
                cache_enabled=False,
            ):
                return self.capture(loss, (x.clone(), y.clone(), mask.clone()), allow_unused_input=True)
        except Exception as error:  # noqa: BLE001 - any failure to record leaves the run to train eagerly
            log.warning(
                f"cuda_graphs: the training step could not be recorded as a CUDA graph "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                f"training on without graphs"
            )
            self.enabled = False
            return None
        finally:
            with torch.no_grad():
                for b, saved in zip(loss.buffers(), buffers):
                    b.copy_(saved)

    @property
    def recorded(self) -> int:
        """How many batch shapes replay a graph."""
        return sum(g is not None for g in self.graphs.values())
