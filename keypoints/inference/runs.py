"""Trained runs: find them (a checkpoint, a run directory, or a sweep directory of runs), rebuild each
net from its own config.yaml (keypoints.training.rundir), load its weights, and assemble their columns
into one model of their keypoint set's keypoints in pixels (keypoints.inference.assembled). `submit`,
`evaluate`, `detect`, `export` and `mirror` all load through here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from keypoints.core import keypointset
from keypoints.core.errors import DataError
from keypoints.inference.assembled import Assembled
from keypoints.training.rundir import checkpoint_path, net_weights, saved_config

log = logging.getLogger(__name__)
RUN_FIT = "framing.yaml"  # a COCO run's own framing fit, in its directory (written by keypoints.photos.framefit)


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


def _run(directory: Path, checkpoint: Path) -> Run:
    config = directory / "config.yaml"
    if not config.is_file():
        raise DataError(f"{config}: not found; expected the run directory that {checkpoint.name} was trained in")
    return Run(directory, checkpoint, saved_config(directory))


def failure(run: Path) -> str | None:
    """Why a sweep's run failed: the message of its error.txt (keypoints.sweeps.summary), or its missing
    checkpoint; None for a run with its checkpoint."""
    error = run / "error.txt"
    if error.is_file():
        lines = error.read_text().splitlines()
        return lines[1] if len(lines) > 1 else "error.txt"
    if not (run / "checkpoints" / "best.ckpt").is_file():
        return "no checkpoints/best.ckpt"
    return None


def find(paths: list[str | Path], strict: bool = False) -> list[Run]:
    """The runs named by checkpoints, run directories, or sweep directories (one run per subdirectory).
    A sweep's failed run is skipped with one line naming it, or with `strict`, refused."""
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
            failed = {run: failure(run) for run in found}
            for run, why in failed.items():
                if why and strict:
                    raise DataError(f"{run}: its run failed ({why}); without --strict it is skipped")
                if why:
                    log.warning(f"skipped {run}: its run failed ({why})")
            if all(failed.values()):
                raise DataError(f"{path}: every run of this sweep failed; nothing to load")
            runs += [_run(run, checkpoint_path(run)) for run, why in failed.items() if not why]
    return runs


def shared(runs: list[Run]) -> tuple[keypointset.KeypointSet, int]:
    """The keypoint set and the face size (data.size) of the runs, which must all have the same."""
    first = runs[0]
    for run in runs[1:]:
        if run.keypoint_set.names != first.keypoint_set.names or run.cfg.data.size != first.cfg.data.size:
            raise DataError(
                f"{run.dir}: keypoint set {run.keypoint_set.name} of {run.cfg.data.size} px faces, but "
                f"{first.dir}: {first.keypoint_set.name} of {first.cfg.data.size} px; "
                f"runs assembled into one model need the same set and data.size"
            )
    return first.keypoint_set, first.cfg.data.size


def framing(runs: list[Run]) -> tuple[str, dict] | None:
    """How the runs' training faces were framed, for detect: a COCO run's own fit, RUN/framing.yaml
    (keypoints.photos.framefit), as (its path, its contents), the same for every run; None for runs trained
    on Kaggle-format crops, which conf/framing.yaml describes."""
    fits = []
    for run in runs:
        if "annotations" not in run.cfg.data:  # Kaggle-format crops
            continue
        path = run.dir / RUN_FIT
        if not path.is_file():
            raise DataError(
                f"{path}: not found; a run trained on COCO data keeps there how a face finder's box "
                f"frames its faces: kfkd framefit --run {run.dir}"
            )
        fits.append((str(path), OmegaConf.to_container(OmegaConf.load(path))))
    if fits and len(fits) != len(runs):
        raise DataError(f"{fits[0][0]}: runs on COCO data and runs on Kaggle-format crops cannot be one model")
    for path, fit in fits[1:]:
        if any(fit.get(k) != fits[0][1].get(k) for k in ("finder", "size", "canonical", "box_to_frame")):
            raise DataError(
                f"{path}: frames faces otherwise than {fits[0][0]}; runs assembled into one model "
                f"need the same framing (the same data and settings)"
            )
    return fits[0] if fits else None


def load(paths: list[str | Path], flip: bool = False, strict: bool = False) -> tuple[Assembled, list[Run]]:
    """The runs `paths` name (`find`), assembled into one model on the fastest device, in eval mode."""
    runs = find(paths, strict)
    specialists = [r.specialist for r in runs]
    model = Assembled(
        [r.net() for r in runs],
        [s.columns for s in specialists],
        [s.flip_indices for s in specialists],
        flip,
        *shared(runs),
        [OmegaConf.select(r.cfg, "mirror.offsets", default=None) for r in runs],
    )  # none before conf/mirror
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), runs
