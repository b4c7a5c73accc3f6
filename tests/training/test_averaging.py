"""The weights' moving average (averaging=ema): it is what validation measures, early stopping restores,
the checkpoints hold and every loader of the run gets."""

import json

import pytest
import torch
from conftest import TINY, compose
from hydra.utils import instantiate

from keypoints.core import keypointset
from keypoints.inference import runs as trained
from keypoints.training.fit import build, fit
from keypoints.training.module import masked_mse
from keypoints.training.rundir import net_weights, read_checkpoint


def test_the_average_is_validated_restored_and_saved(tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg = compose(
        "data=kaggle",
        f"data.dir={tiny_data}",
        "data.batch_size=16",
        "optimizer=adamw",
        "loss=masked",
        "averaging=ema",
        "averaging.multi_avg_fn.decay=0.9",
        "trainer.max_epochs=4",
        f"paths.output_dir={out}",
        f"paths.cache_dir={tmp_path}/cache",
        *TINY,
    )
    metrics = fit(cfg)
    state = read_checkpoint(out)["state_dict"]
    raw = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    average = net_weights(out)
    assert average.keys() == raw.keys()
    assert all(torch.equal(average[k], state[f"averaged.module.{k}"]) for k in average)
    assert not all(torch.equal(average[k], raw[k]) for k in raw)  # the average is not the trained weights
    assert int(state["averaged.n_averaged"]) == (metrics["best_epoch"] + 1) * 4  # 64 rows: 4 steps an epoch

    # The run's validation RMSE is the loaded run's (the averaged weights') on the validation rows...
    model, _ = trained.load([out])
    datamodule = instantiate(cfg.data, columns=keypointset.specialist(cfg).columns)
    datamodule.setup()
    x, y, mask = datamodule.valid_set[:]
    # Recomputed in the run's own precision (bf16-mixed on CPUs with native bf16), as validation ran.
    bf16 = cfg.trainer.precision == "bf16-mixed"
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        rmse = float(masked_mse(torch.tensor(model.predict(x, 16) - 48) / 48, y, mask).sqrt() * 48)
        raw_net = instantiate(cfg.net, n_outputs=30)
        raw_net.load_state_dict(raw)
        raw_rmse = float(masked_mse(raw_net.eval()(x), y, mask).sqrt() * 48)
    assert abs(rmse - metrics["valid_rmse_px"]) < 1e-3 and abs(raw_rmse - rmse) > 1e-3
    # ...and that of the best epoch: early stopping restored the average it validated then.
    best = min(metrics["history"], key=lambda e: e["valid_loss"])
    assert best["epoch"] == metrics["best_epoch"] and abs(best["valid_rmse_px"] - rmse) < 1e-3
    assert json.loads((out / "metrics.json").read_text())["valid_rmse_px"] == metrics["valid_rmse_px"]


def test_the_average_trains_nothing_itself():
    cfg = compose(
        "averaging=ema", "optimizer=adamw", "schedule=constant", "paths.output_dir=unused", "data.dir=unused", *TINY
    )
    _, module, _ = build(cfg)
    optimised = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.net.parameters()}
    assert not any(p.requires_grad for p in module.averaged.parameters())


@pytest.mark.slow
def test_a_resumed_run_continues_the_average(tiny_data, tmp_path):
    settings = (
        "data=kaggle",
        f"data.dir={tiny_data}",
        "data.batch_size=16",
        "optimizer=adamw",
        "schedule=constant",
        "loss=masked",
        "averaging=ema",
        "averaging.multi_avg_fn.decay=0.9",
        f"paths.cache_dir={tmp_path}/cache",
        "trainer.enable_progress_bar=false",
        *TINY,
    )
    whole = fit(compose(*settings, "trainer.max_epochs=4", f"paths.output_dir={tmp_path}/whole"))
    fit(compose(*settings, "trainer.max_epochs=2", f"paths.output_dir={tmp_path}/cut"))
    resumed = fit(
        compose(*settings, "trainer.max_epochs=4", f"paths.output_dir={tmp_path}/cut"),
        resume_from=tmp_path / "cut" / "checkpoints" / "last.ckpt",
    )
    assert resumed["history"] == whole["history"] and resumed["valid_loss"] == whole["valid_loss"]
