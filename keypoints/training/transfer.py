"""Weight transfer: a net started from another run's weights (`init_from`), as the tutorial's
specialists start from the base net's."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from keypoints.core.errors import DataError
from keypoints.models.nets import output_layer
from keypoints.training.rundir import checkpoint_path, net_weights

log = logging.getLogger(__name__)


def init_from(net: nn.Module, path: str | Path) -> list[str]:
    """Copy into `net` every tensor of the checkpoint's net whose name and shape match; return their names.

    The rest keep their fresh initialisation: the output layer, when the columns differ.
    """
    source, target = net_weights(path), net.state_dict()
    copied = [k for k, v in target.items() if k in source and source[k].shape == v.shape]
    head = output_layer(net)
    if not [k for k in copied if not k.startswith(f"{head}.")]:
        raise DataError(
            f"init_from={path}: no weight matches this net's layers besides the output layer; "
            f"expected a checkpoint of the same net architecture (net=..., net.hidden=...)"
        )
    with torch.no_grad():
        for k in copied:
            target[k].copy_(source[k])
    fresh = [k for k in target if k not in copied]
    log.info(
        "init_from %s: copied %d of %d tensors; fresh: %s",
        checkpoint_path(path),
        len(copied),
        len(target),
        ", ".join(fresh) or "none",
    )
    return copied
