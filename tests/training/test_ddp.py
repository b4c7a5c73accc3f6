"""trainer=ddp: Lightning DDP with 2 CPU processes (gloo) through train.py, as a user runs it."""

import json
import math

import pytest
import torch
from conftest import compose, run_train
from hydra.utils import instantiate

from keypoints.core import keypointset
from keypoints.training.module import masked_mse

pytestmark = pytest.mark.slow


def test_ddp_shards_batches_between_ranks_and_syncs_metrics(tiny_data, tmp_path):
    overrides = ["data=kaggle", f"data.dir={tiny_data}", "loss=masked", "data.batch_size=8"]
    run_train(
        tmp_path, *overrides, "trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32", "trainer.max_epochs=2"
    )
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    # Each rank steps through its half of the training rows: half the steps of one process.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2 * math.ceil(metrics["n_train"] / 2 / 8)
    # The reported RMSE is over the whole validation set, not one rank's half.
    cfg = compose(*overrides, f"paths.cache_dir={tmp_path}/outputs/cache")
    dm = instantiate(cfg.data, columns=keypointset.specialist(cfg).columns)
    dm.setup()
    net = instantiate(cfg.net, n_outputs=len(keypointset.specialist(cfg).columns))
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in best.items()})
    x, y, mask = dm.valid_set[:]
    with torch.no_grad():
        rmse = float(masked_mse(net.eval()(x), y, mask).sqrt() * 48)
    assert metrics["valid_rmse_px"] == pytest.approx(rmse, rel=1e-4)
