"""One run: build data, net, module and Trainer from the config, fit, and write metrics.json."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from keypoints.callbacks import EarlyStopping, History
from keypoints.module import KeypointsModule
from keypoints.plots import log_sample_faces
from keypoints.specialists import init_from, spread_over_gpus

log = logging.getLogger(__name__)


def build(cfg: DictConfig):
    """The DataModule, LightningModule and Trainer a config describes."""
    columns = list(cfg.specialist.columns)
    datamodule = instantiate(cfg.data, columns=columns)
    module = KeypointsModule(
        net=instantiate(cfg.net, n_outputs=len(columns)),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.schedule, _convert_="object") or None,
        augment=list(instantiate(cfg.augment).values()),
        channels_last=cfg.channels_last,
    )
    if cfg.init_from:
        init_from(module.net, cfg.init_from)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] + [History()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=instantiate(cfg.logger))
    return datamodule, module, trainer


def fit(cfg: DictConfig) -> dict:
    """Train one net as configured; return (and write to metrics.json) its final metrics."""
    start = time.time()
    cfg = OmegaConf.merge(cfg, cfg.specialist.overrides)  # the tutorial's per-specialist kwargs
    spread_over_gpus(cfg)
    budget = cfg.epoch_budget.pretrained if cfg.init_from else cfg.epoch_budget.scratch
    if budget:  # the tutorial's epochs per training row; set before build, as the schedule reads it
        counter = instantiate(cfg.data, columns=list(cfg.specialist.columns))
        counter.setup()
        cfg.trainer.max_epochs = max(1, int(budget / len(counter.train_set)))
    pl.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    datamodule, module, trainer = build(cfg)
    trainer.logger.log_hyperparams(_flat(cfg))
    trainer.fit(module, datamodule=datamodule)
    # Validate the weights the run ends with (the best epoch's, restored by EarlyStopping).
    final = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    log_sample_faces(trainer.logger, module, datamodule.valid_set, trainer.current_epoch)
    history = next(c for c in trainer.callbacks if isinstance(c, History)).epochs
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    metrics = {
        "train_loss": history[-1]["train_loss"] if history else None,
        "valid_loss": final["valid_loss"],
        "valid_rmse_px": final["valid_rmse_px"],
        "best_epoch": stopper.best_epoch if stopper else len(history) - 1,
        "epochs": len(history),
        "n_train": len(datamodule.train_set),
        "n_valid": len(datamodule.valid_set),
        "wall_time_s": round(time.time() - start, 2),
        "history": history,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _flat(cfg: DictConfig) -> dict:
    """The resolved config as flat `a.b.c: value` pairs, for TensorBoard's hyperparameter table."""
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat
