"""The fast recipe's pieces: torch's schedulers from config, and the `fast` preset end to end."""

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import compose, run_train

from keypoints.training.fit import build


def lrs(schedule: str, tmp_path, epochs: int = 20) -> list[float]:
    """The lr of each step of an AdamW run of `epochs` epochs of one batch, from the configured
    optimiser and scheduler."""
    _, module, _ = build(
        compose(
            "optimizer=adamw",
            f"schedule={schedule}",
            f"trainer.max_epochs={epochs}",
            f"paths.output_dir={tmp_path}",
            "data.dir=unused",
        )
    )
    module.trainer = SimpleNamespace(estimated_stepping_batches=epochs)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_cosine_anneals_the_optimisers_lr_to_zero_over_max_epochs(tmp_path):
    lr = lrs("cosine", tmp_path)
    assert lr[0] == pytest.approx(1e-3) and lr[10] == pytest.approx(0.5e-3) and lr[-1] < 1e-5
    assert all(a >= b for a, b in zip(lr, lr[1:]))


def test_onecycle_warms_up_to_max_lr_then_anneals(tmp_path):
    lr = lrs("onecycle", tmp_path)
    peak = max(range(20), key=lr.__getitem__)
    assert lr[0] == pytest.approx(0.003 / 25) and lr[peak] == pytest.approx(0.003, rel=0.05)
    assert peak == 4 and lr[-1] < 1e-4  # pct_start 0.25 of 20 steps


def test_fast_preset_composes_the_recipe():
    cfg = compose("experiment=fast")
    assert not cfg.loss.drop_incomplete and cfg.loss.criterion._target_ == "torch.nn.HuberLoss"
    assert cfg.net._target_ == "keypoints.models.heatmap.HeatmapNet"
    assert list(cfg.augment) == ["flip", "affine", "photometric"]
    assert cfg.optimizer._target_ == "torch.optim.AdamW"
    assert cfg.schedule.interval == "step"  # one-cycle spans the run's steps


@pytest.mark.slow
def test_fast_preset_trains(tiny_data, tmp_path):
    run_train(
        tmp_path,
        "experiment=fast",
        "data=kaggle",
        f"data.dir={tiny_data}",
        "data.batch_size=32",
        "trainer.max_epochs=3",
    )
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    history = metrics["history"]
    assert metrics["epochs"] == 3 and metrics["n_train"] == 64
    assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
