"""Trained runs: find them, rebuild each net from its own config.yaml, load its weights, and
assemble their columns into one model of their keypoint set's keypoints in pixels.

A run is found from the path it is given (a checkpoint, a run directory, or a sweep directory of
runs) and read relative to that path, never through the absolute paths saved in its config, so a
run moved, copied or rsynced elsewhere still loads; a run trained before keypoint sets is read as a
kaggle15 run (keypointset.upgrade). `submit`, `detect`, `export` and the specialists' weight
transfer all load through here.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from keypoints import keypointset
from keypoints.augment import mirror_offsets, unmirror_predictions
from keypoints.data import DataError


@dataclass
class Run:
    dir: Path
    checkpoint: Path
    cfg: DictConfig

    @property
    def keypoint_set(self) -> keypointset.KeypointSet:
        return keypointset.of(self.cfg, str(self.dir / "config.yaml"))

    @property
    def specialist(self) -> keypointset.Specialist:
        return self.keypoint_set.specialist(self.cfg.specialist)

    @property
    def columns(self) -> list[str]:
        return self.specialist.columns

    def net(self) -> nn.Module:
        """The run's net, rebuilt from its config and loaded with the checkpoint's weights, in eval mode."""
        net = instantiate(self.cfg.net, n_outputs=len(self.columns))
        net.load_state_dict(net_weights(self.checkpoint))
        return net.eval()


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's checkpoints/best.ckpt."""
    path = Path(path).expanduser()
    ckpt = path / "checkpoints" / "best.ckpt" if path.is_dir() else path
    if not ckpt.is_file():
        raise DataError(f"{ckpt}: no such checkpoint; expected a .ckpt file or a run directory holding "
                        f"checkpoints/best.ckpt")
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
        return new + value[len(old):] if old and (value == old or value.startswith(old + os.sep)) else value
    if isinstance(value, dict):
        return {relocated(k, old, new): relocated(v, old, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(relocated(v, old, new) for v in value)
    return value


def saved_config(directory: str | Path) -> DictConfig:
    """A run directory's config.yaml, with the run's own paths (`paths.output_dir` and everything
    under it: checkpoints, logs) where the directory is now rather than where it was trained.
    Paths outside the run (`data.dir`, the cache) are kept as they were given. A run trained before
    keypoint sets comes in today's shape (keypointset.upgrade)."""
    path = Path(directory) / "config.yaml"
    cfg = keypointset.upgrade(OmegaConf.load(path), str(path))
    trained_in = OmegaConf.select(cfg, "paths.output_dir")
    if not trained_in:
        return cfg
    return OmegaConf.create(relocated(OmegaConf.to_container(cfg), trained_in, os.path.abspath(directory)))


def _run(directory: Path, checkpoint: Path) -> Run:
    config = directory / "config.yaml"
    if not config.is_file():
        raise DataError(f"{config}: not found; expected the run directory that {checkpoint.name} was trained in")
    return Run(directory, checkpoint, saved_config(directory))


def find(paths: list[str | Path]) -> list[Run]:
    """The runs named by checkpoints, run directories, or sweep directories (one run per subdirectory)."""
    runs = []
    for path in (Path(p).expanduser() for p in paths):
        if path.is_file():  # checkpoints/<name>.ckpt inside a run directory
            runs.append(_run(path.parent.parent, path))
        elif (path / "config.yaml").is_file():
            runs.append(_run(path, checkpoint_path(path)))
        else:
            found = sorted(d for d in path.glob("*/") if (d / "config.yaml").is_file())
            if not found:
                raise DataError(f"{path}: no checkpoint, run directory (config.yaml) or sweep directory of runs")
            runs += [_run(d, checkpoint_path(d)) for d in found]
    return runs


class Assembled(nn.Module):
    """Several runs' nets, all of one keypoint set and face size, as one model: faces (N, 1, size, size)
    in [0, 1] -> keypoints (N, len(columns)) in pixels, `columns` in the set's order. Each column comes
    from the narrowest net that predicts it (a specialist over `all`). With `flip`, each net's
    prediction is averaged with its prediction for the mirrored face, mirrored back with that net's
    flip_indices and mirror offsets (test-time augmentation)."""

    def __init__(self, nets: list[nn.Module], columns: list[list[str]], flip_indices: list[list], flip: bool,
                 keypoint_set: keypointset.KeypointSet, size: int, mirror: list[dict] | None = None):
        super().__init__()
        self.nets, self.flip, self.keypoint_set, self.size = nn.ModuleList(nets), flip, keypoint_set, size
        source = {}  # column -> position in the nets' concatenated outputs; narrower nets come later and win
        offsets = np.cumsum([0] + [len(c) for c in columns])
        for i in sorted(range(len(nets)), key=lambda i: -len(columns[i])):
            source.update({c: offsets[i] + j for j, c in enumerate(columns[i])})
        self.columns = [c for c in keypoint_set.columns if c in source]
        self.register_buffer("take", torch.tensor([source[c] for c in self.columns]), persistent=False)
        self.flip_indices = [[tuple(p) for p in pairs] for pairs in flip_indices]
        self.mirror = [mirror_offsets(m, c, size) for m, c in zip(mirror or [None] * len(nets), columns)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for net, pairs, offset in zip(self.nets, self.flip_indices, self.mirror):
            y = net(x).float()
            if self.flip:
                y = (y + unmirror_predictions(net(x.flip(-1)).float(), pairs, offset)) / 2
            outputs.append(y)
        return torch.cat(outputs, 1)[:, self.take] * (self.size / 2) + self.size / 2

    def predict(self, x: torch.Tensor, batch_size: int) -> np.ndarray:
        """Keypoints in pixels (N, len(columns)) for faces x, in batches on the model's device."""
        device = next(self.parameters()).device
        with torch.inference_mode():
            return torch.cat([self(b.to(device)).cpu() for b in x.split(batch_size)]).numpy()


def shared(runs: list[Run]) -> tuple[keypointset.KeypointSet, int]:
    """The keypoint set and the face size (data.size) of the runs, which must all have the same."""
    first = runs[0]
    for run in runs[1:]:
        if run.keypoint_set.names != first.keypoint_set.names or run.cfg.data.size != first.cfg.data.size:
            raise DataError(f"{run.dir}: keypoint set {run.keypoint_set.name} of {run.cfg.data.size} px faces, but "
                            f"{first.dir}: {first.keypoint_set.name} of {first.cfg.data.size} px; "
                            f"runs assembled into one model need the same set and data.size")
    return first.keypoint_set, first.cfg.data.size


def framing(runs: list[Run]) -> tuple[str, dict] | None:
    """How the runs' training faces were framed, for detect: a COCO run's own fit, RUN/framing.yaml
    (keypoints.framefit), as (its path, its contents), the same for every run; None for runs trained
    on Kaggle-format crops, which conf/framing.yaml describes."""
    from keypoints.framefit import RUN_FIT

    fits = []
    for run in runs:
        if "annotations" not in run.cfg.data:  # Kaggle-format crops
            continue
        path = run.dir / RUN_FIT
        if not path.is_file():
            raise DataError(f"{path}: not found; a run trained on COCO data keeps there how a face finder's box "
                            f"frames its faces: python -m keypoints.framefit --run {run.dir}")
        fits.append((str(path), OmegaConf.to_container(OmegaConf.load(path))))
    if fits and len(fits) != len(runs):
        raise DataError(f"{fits[0][0]}: runs on COCO data and runs on Kaggle-format crops cannot be one model")
    for path, fit in fits[1:]:
        if any(fit.get(k) != fits[0][1].get(k) for k in ("finder", "size", "canonical", "box_to_frame")):
            raise DataError(f"{path}: frames faces otherwise than {fits[0][0]}; runs assembled into one model "
                            f"need the same framing (the same data and settings)")
    return fits[0] if fits else None


def load(paths: list[str | Path], flip: bool = False) -> tuple[Assembled, list[Run]]:
    """The runs `paths` name, assembled into one model on the fastest device, in eval mode."""
    runs = find(paths)
    specialists = [r.specialist for r in runs]
    model = Assembled([r.net() for r in runs], [s.columns for s in specialists],
                      [s.flip_indices for s in specialists], flip, *shared(runs),
                      [OmegaConf.select(r.cfg, "mirror.offsets", default=None) for r in runs])  # none before conf/mirror
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), runs
