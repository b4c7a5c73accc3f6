"""A run directory read back: its config and its checkpoints, wherever the directory has moved.

A run is read relative to the path it is given, never through the absolute paths saved in its config,
so a run moved, copied or rsynced elsewhere still loads; a run trained before keypoint sets is read
as a kaggle15 run (keypointset.upgrade).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from keypoints.core import keypointset
from keypoints.core.errors import DataError


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's checkpoints/best.ckpt."""
    path = Path(path).expanduser()
    ckpt = path / "checkpoints" / "best.ckpt" if path.is_dir() else path
    if not ckpt.is_file():
        raise DataError(
            f"{ckpt}: no such checkpoint; expected a .ckpt file or a run directory holding checkpoints/best.ckpt"
        )
    return ckpt


# What torch.load raises for a file cut short or damaged.
BROKEN = (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError)


def _load(ckpt: Path) -> dict:
    # The project's own checkpoints: the scheduler's state holds numpy arrays, not only tensors.
    return torch.load(ckpt, map_location="cpu", weights_only=False)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents; a truncated or corrupt file is reported as such, with the run's
    other checkpoint to use instead where one is intact."""
    ckpt = checkpoint_path(path)
    try:
        return _load(ckpt)
    except PermissionError as e:
        raise DataError(f"{ckpt}: cannot be read ({e.strerror})") from None
    except BROKEN as e:
        raise DataError(f"{ckpt} is truncated or corrupt ({str(e).splitlines()[0][:200]}); {_instead(ckpt)}") from None


def _instead(ckpt: Path) -> str:
    """What is left of a run whose checkpoint `ckpt` is broken: another intact checkpoint beside it
    (last.ckpt, when it is a file of its own rather than the link to best.ckpt), or nothing."""
    for other in sorted(ckpt.parent.glob("*.ckpt")):
        if other.exists() and not other.samefile(ckpt):
            try:
                _load(other)
            except BROKEN:
                continue
            return f"use {other} instead"
    return "the run's last good state is lost"


AVERAGED = "averaged.module."  # KeypointsModule's weight average (averaging=ema), beside its trained `net.`


def net_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The net's tensors from a run's checkpoint, named as in the net (no prefix): the weight
    average's where the run kept one, as validation measured them, else the trained net's."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise DataError(f"{checkpoint_path(path)}: not a kfkd checkpoint (no state_dict)")
    state = checkpoint["state_dict"]
    prefix = AVERAGED if any(k.startswith(AVERAGED) for k in state) else "net."
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def relocated(value, old: str, new: str):
    """`value` (a string, or dicts, lists and tuples of them) with every path at or under `old`
    moved to the same place under `new`; everything else as it was."""
    if isinstance(value, str):
        old = old.rstrip(os.sep)
        return new + value[len(old) :] if old and (value == old or value.startswith(old + os.sep)) else value
    if isinstance(value, dict):
        return {relocated(k, old, new): relocated(v, old, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(relocated(v, old, new) for v in value)
    return value


# Where each module of the flat package that runs trained before the layers name now lives.
MOVED = {
    f"keypoints.{old}": f"keypoints.{new}"
    for old, new in {
        "data": "data.kaggle", "coco": "data.coco", "synthetic": "data.synthetic", "augment": "data.augment",
        "images": "data.images", "framing": "data.framing", "nets": "models.nets", "resnet": "models.resnet",
        "heatmap": "models.heatmap", "module": "training.module", "callbacks": "training.callbacks",
        "checkpoints": "training.checkpoints", "schedules": "training.schedules", "metrics": "training.metrics",
        "keypointset": "core.keypointset", "faces": "photos.finders", "framefit": "photos.framefit",
        "search": "sweeps.search", "cluster": "sweeps.cluster", "faults": "sweeps.summary",
    }.items()
}  # fmt: skip


def moved_targets(value):
    """`value` (a config as containers) with every `_target_` of a module that has moved named where it is now."""
    if isinstance(value, dict):
        target = value.get("_target_")
        if isinstance(target, str) and target.rpartition(".")[0] in MOVED:
            module, _, name = target.rpartition(".")
            value = {**value, "_target_": f"{MOVED[module]}.{name}"}
        return {k: moved_targets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [moved_targets(v) for v in value]
    return value


def saved_config(directory: str | Path) -> DictConfig:
    """A run directory's config.yaml, with the run's own paths (`paths.output_dir` and everything
    under it: checkpoints, logs) where the directory is now rather than where it was trained.
    Paths outside the run (`data.dir`, the cache) are kept as they were given. A run trained before
    keypoint sets, or before kfkd's modules moved into layers, comes in today's shape."""
    path = Path(directory) / "config.yaml"
    cfg = keypointset.upgrade(OmegaConf.create(moved_targets(OmegaConf.to_container(OmegaConf.load(path)))), str(path))
    trained_in = OmegaConf.select(cfg, "paths.output_dir")
    if not trained_in:
        return cfg
    return OmegaConf.create(relocated(OmegaConf.to_container(cfg), trained_in, os.path.abspath(directory)))
