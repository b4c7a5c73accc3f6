"""One run: build data, net, module and Trainer from the config, fit, and write metrics.json."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from keypoints.core import keypointset
from keypoints.core.errors import DataError, RunError
from keypoints.training import quiet
from keypoints.training.callbacks import EarlyStopping, History, RunEnd
from keypoints.training.faults import RandomState, divergence, interruptible
from keypoints.training.hardware import keep_freed_memory, spread_over_gpus
from keypoints.training.metrics import nme_pair
from keypoints.training.module import KeypointsModule
from keypoints.training.plots import log_sample_faces
from keypoints.training.transfer import init_from

log = logging.getLogger(__name__)
FINAL_METRICS = ("valid_rmse_px", "valid_nme_pct")  # TensorBoard's hyperparameter table: as hp/<name>


def finals(module: KeypointsModule) -> tuple[str, ...]:
    """The final metrics a run logs: the NME too where its net predicts the set's nme pair."""
    return FINAL_METRICS if module.valid_nme is not None else FINAL_METRICS[:1]


def build(cfg: DictConfig):
    """The DataModule, LightningModule and Trainer a config describes."""
    verbose = quiet.verbose()
    quiet.install(verbose)  # first: the libraries' notes while building (the Trainer's) are among the noise
    keypoint_set = keypointset.of(cfg)
    unknown = keypoint_set.unknown_columns(OmegaConf.select(cfg, "mirror.offsets") or {})
    if unknown:
        raise DataError(
            f"mirror.offsets: {unknown[0]!r} is not one of the keypoint set {keypoint_set.name}'s columns (conf/mirror)"
        )
    specialist = keypoint_set.specialist(cfg.specialist)
    columns = specialist.columns
    datamodule = instantiate(cfg.data, columns=columns)
    module = KeypointsModule(
        net=instantiate(cfg.net, n_outputs=len(columns)),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.schedule, _convert_="object") or None,
        criterion=instantiate(cfg.loss.criterion),
        augment=list(instantiate(cfg.augment).values()),
        channels_last=cfg.channels_last,
        averaging=instantiate(cfg.averaging) or None,
        size=cfg.data.size,
        cuda_graphs=cfg.cuda_graphs,
        nme=nme_pair(specialist.keypoints, keypoint_set.nme),
    )
    # conf/callbacks: each entry is a callback, or a factory of those that apply to this run (a list)
    made = [instantiate(c) for c in cfg.callbacks.values()]
    callbacks = [c for m in made for c in (m if isinstance(m, list) else [m])] + [History(), RandomState()]
    # Lightning's model summary is one of its INFO lines, but printed (by rich) whatever the logging level
    summary = verbose and cfg.trainer.get("enable_model_summary", True)
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=instantiate(cfg.logger), enable_model_summary=summary
    )
    return datamodule, module, trainer


def configure(cfg: DictConfig) -> DictConfig:
    """A fresh run's config: the specialist's overrides merged in, and max_epochs from the epoch budget.

    A resumed run's saved config holds what this sets when it started, and the resuming command line
    may change it (trainer.max_epochs=...): it is for a run's start only."""
    specialist = keypointset.specialist(cfg)
    cfg = OmegaConf.merge(cfg, specialist.overrides)  # the tutorial's per-specialist kwargs
    budget = cfg.epoch_budget.pretrained if cfg.init_from else cfg.epoch_budget.scratch
    if budget:  # the tutorial's epochs per training row; set before build, as the schedule reads it
        counter = instantiate(cfg.data, columns=specialist.columns)
        counter.setup()
        cfg.trainer.max_epochs = max(1, int(budget / len(counter.train_set)))
    return cfg


def start(cfg: DictConfig, fresh: bool):
    """Seed, claim the run directory (a fresh run's: its config.yaml), build, and start a fresh run's
    net from `init_from`; return the DataModule, LightningModule and Trainer."""
    pl.seed_everything(cfg.seed, workers=True, verbose=quiet.verbose())
    out = Path(cfg.paths.output_dir)
    # DDP's other ranks re-run train.py into the same directory: only rank 0 claims it.
    if fresh and rank_zero_only.rank == 0:
        if (out / "config.yaml").exists():  # e.g. a fixed hydra.run.dir used twice
            raise RunError(f"{out} already holds a run; choose another hydra.run.dir, or continue it with resume={out}")
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    datamodule, module, trainer = build(cfg)
    if fresh and cfg.init_from:  # resumed, every weight comes from the checkpoint; the source may have moved
        init_from(module.net, cfg.init_from)
    # TensorBoard's hyperparameter table: the resolved config (Lightning flattens it) against the
    # final valid RMSE and NME, logged once the best weights are restored (NaN until then).
    trainer.logger.log_hyperparams(
        OmegaConf.to_container(cfg, resolve=True), {f"hp/{k}": math.nan for k in finals(module)}
    )
    return datamodule, module, trainer


def fit(cfg: DictConfig, resume_from: Path | None = None) -> dict:
    """Train one net as configured, or continue one from its checkpoint `resume_from`; return (and
    write to metrics.json) its final metrics."""
    start_time = time.time()
    if cfg.keep_freed_memory:
        keep_freed_memory()
    fresh = resume_from is None
    if not fresh:  # kfkd's own line: Lightning's "Restored all states" is among the INFO lines kept quiet
        log.info(f"resuming {cfg.paths.output_dir} from {resume_from}")
    if fresh and cfg.get("packed"):
        raise RunError(
            "packed=true is an option of kfkd specialists and python -m keypoints.specialists.packed, "
            "which train specialists together; train.py trains one net"
        )
    if fresh:
        cfg = configure(cfg)
    spread_over_gpus(cfg)
    datamodule, module, trainer = start(cfg, fresh)
    with interruptible(cfg):
        # weights_only=False: the checkpoint is this run's own, and holds the generators' states
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=False)
    history = next(c for c in trainer.callbacks if isinstance(c, History)).epochs
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    diverged = divergence(history)  # EarlyStopping (check_finite) stops such a run at that epoch
    if diverged:
        if stopper is None or stopper.best_epoch is None:
            raise RunError(f"{diverged}, before any epoch with finite losses: nothing to keep (a lower optimizer.lr?)")
        log.warning(
            f"{diverged}: training stopped; epoch {stopper.best_epoch}'s weights restored, "
            f"its checkpoint kept at {trainer.checkpoint_callback.best_model_path}"
        )
    best_epoch = stopper.best_epoch if stopper else len(history) - 1
    return finish(trainer, module, datamodule, history, best_epoch, trainer.current_epoch, start_time)


def finish(
    trainer: pl.Trainer, module, datamodule, history: list[dict], best_epoch: int, epoch: int, start_time: float
) -> dict:
    """Validate the weights the run ends with (the best epoch's, restored), log them and the sample
    faces of `epoch` to TensorBoard, and write metrics.json; return its metrics."""
    # For metrics.json: in TensorBoard this validation would be a point past the last epoch.
    logger, trainer.loggers = trainer.logger, []
    final = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    log_sample_faces(logger, module, datamodule.valid_set, epoch)
    logger.log_metrics({f"hp/{k}": final[k] for k in finals(module)}, step=len(history))
    logger.finalize("success")
    metrics = {
        "train_loss": history[-1]["train_loss"] if history else None,
        "valid_loss": final["valid_loss"],
        "valid_rmse_px": final["valid_rmse_px"],
        "valid_nme_pct": final.get("valid_nme_pct"),  # none where the run lacks the set's nme pair
        "valid_failure_pct": final.get("valid_failure_pct"),
        "best_epoch": best_epoch,
        "diverged": divergence(history),
        "epochs": len(history),
        "n_train": len(datamodule.train_set),
        "n_valid": len(datamodule.valid_set),
        "wall_time_s": round(time.time() - start_time, 2),
        "history": history,
    }
    if trainer.is_global_zero:  # under DDP every rank gets here with the same (synced) metrics
        out = Path(trainer.default_root_dir)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        for callback in trainer.callbacks:
            if isinstance(callback, RunEnd):
                callback.on_run_end(out, datamodule)
    return metrics
