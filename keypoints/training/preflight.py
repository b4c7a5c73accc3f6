"""A run's first contact: the mistakes in its config and in the files it names, found before the run
makes its directory and before torch is imported, end the command with one line
(keypoints.core.mistakes); one that only reading the data in training finds removes the directory
this command made again, so that no run is left behind that never trained.

What is checked first: the keypoint set and the specialist, the data (keypoints.data.checks: files,
headers, names, never pixels), and a `resume=` directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from keypoints.core import keypointset, mistakes
from keypoints.core.errors import RunError, UserError
from keypoints.data import checks


class Preflight(Callback):
    """Hydra's callback (conf/config.yaml). Hydra calls on_run_start before it makes the run's directory
    (train.log, .hydra/) and turns a callback's exceptions into warnings, hence the exits. A multirun
    checks its keypoint set; each of its jobs fails on its own, and the sweep's summary lists it."""

    made: tuple[Path, ...] = ()  # the folders this command makes for its run, the run's first (none for resume=)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with mistakes.stopping():
            if config.resume is not None:
                resumable(config, config.hydra)
            else:
                checks.check(config.data, keypointset.specialist(config).columns)
        run = Path(os.path.abspath(config.hydra.run.dir))
        self.made = tuple(d for d in (run, *run.parents) if not d.exists()) if config.resume is None else ()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        with mistakes.stopping():
            keypointset.of(config)

    def on_run_end(self, config: DictConfig, job_return, **kwargs) -> None:
        error = job_return._return_value  # the job's exception; `return_value` would re-raise it
        if job_return.status != JobStatus.FAILED or not isinstance(error, UserError):
            return
        if self.made and not any(self.made[0].rglob("*.ckpt")):  # a run that trained keeps its directory
            shutil.rmtree(self.made[0], ignore_errors=True)
            for folder in self.made[1:]:  # outputs/runs, where this command made them, unless another run is there
                try:
                    folder.rmdir()  # an empty folder only
                except OSError:
                    break
        mistakes.stop(error, str(error))


def override_key(override: str) -> str:
    """The key an override of the command line sets: `trainer.max_epochs` of `+trainer.max_epochs=9`."""
    return override.split("=", 1)[0].lstrip("+")


def resumable(cfg: DictConfig, hydra: DictConfig) -> Path:
    """The run directory `resume=RUN_DIR` names, checked: one run (no -m) that has not finished nor
    was trained packed, resumed by a command line that keeps its config groups and specialist."""
    run = Path(os.path.abspath(cfg.resume))
    if hydra.mode == RunMode.MULTIRUN:
        raise RunError("resume continues one run; drop -m/--multirun")
    if not (run / "config.yaml").is_file():
        raise RunError(f"{run}: not a run directory (no config.yaml); give resume= a run directory under outputs/")
    if (run / "metrics.json").is_file():
        raise RunError(f"{run}: this run has finished (metrics.json is there); nothing to resume")
    if OmegaConf.load(run / "config.yaml").get("packed"):
        raise RunError(
            f"{run}: trained packed with other specialists (packed=true), which is not resumed; its best "
            f"weights so far are in checkpoints/best.ckpt; train again with python -m keypoints.specialists.packed"
        )
    for override in hydra.overrides.task:
        key = override_key(override)
        if key in hydra.runtime.choices or key == "specialist" or key.startswith("~"):
            raise RunError(f"resume={cfg.resume} keeps the run's config groups and specialist; drop {override}")
    return run
