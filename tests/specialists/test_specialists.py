"""Specialists: their configs, the weight transfer from the base net, the epoch budget, GPU placement."""

import pytest
import torch
from conftest import KAGGLE15, ROOT, compose
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from keypoints.core import keypointset
from keypoints.core.errors import DataError
from keypoints.models.nets import output_layer
from keypoints.specialists import pipeline as specialists
from keypoints.training.fit import fit
from keypoints.training.hardware import spread_over_gpus
from keypoints.training.transfer import init_from

SPECIALISTS = ["all", *KAGGLE15.specialists]
TINY_NET = ("net=cnn", "net.channels=[4,4,4]", "net.hidden=8")


def test_the_tutorial_specialists_exist():
    assert list(KAGGLE15.specialists) == ["eyes", "nose", "mouth", "mouth_bottom", "eye_corners", "eyebrows"]
    groups = [keypointset.specialist(compose(f"specialist={s}")).columns for s in KAGGLE15.specialists]
    assert sorted(c for g in groups for c in g) == sorted(KAGGLE15.columns)  # the six cover every column once


@pytest.mark.parametrize("name", SPECIALISTS)
def test_specialist_composes_and_builds_its_output_layer(name):
    cfg = compose(f"specialist={name}", "experiment=specialists")
    spec = keypointset.specialist(cfg)
    assert spec.name == name and set(spec.columns) <= set(KAGGLE15.columns)
    net = instantiate(cfg.net, n_outputs=len(spec.columns))
    assert net(torch.zeros(1, 1, 96, 96)).shape == (1, len(spec.columns))


def save_checkpoint(net, path):
    """A checkpoint as Lightning writes it: the module's state dict, the net under `net.`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)


def test_init_from_copies_matching_tensors_and_leaves_the_output_layer_fresh(tmp_path):
    cfg = compose(*TINY_NET)
    torch.manual_seed(0)
    base = instantiate(cfg.net, n_outputs=30)
    save_checkpoint(base, tmp_path / "run" / "checkpoints" / "best.ckpt")
    torch.manual_seed(1)
    eyes = instantiate(cfg.net, n_outputs=4)
    fresh = {k: v.clone() for k, v in eyes.state_dict().items()}
    copied = init_from(eyes, tmp_path / "run")  # a run directory: its checkpoints/best.ckpt
    head = output_layer(eyes)
    assert sorted(copied) == sorted(k for k in fresh if not k.startswith(f"{head}."))
    for k, v in eyes.state_dict().items():
        expected = fresh[k] if k.startswith(f"{head}.") else base.state_dict()[k]
        assert torch.equal(v, expected), k
    assert not torch.equal(fresh["0.weight"], base.state_dict()["0.weight"])  # the copy changed something


def test_init_from_rejects_a_missing_path_and_another_architecture(tmp_path):
    cnn = instantiate(compose(*TINY_NET).net, n_outputs=4)
    with pytest.raises(DataError, match=r"nowhere.*no such checkpoint; expected a \.ckpt file or a run directory"):
        init_from(cnn, tmp_path / "nowhere")
    save_checkpoint(instantiate(compose("net=mlp").net, n_outputs=4), tmp_path / "mlp.ckpt")
    with pytest.raises(DataError, match="no weight matches this net's layers besides the output layer"):
        init_from(cnn, tmp_path / "mlp.ckpt")


def test_epoch_budget_sets_max_epochs_and_the_schedule_follows_and_faces_are_logged(tiny_data, tmp_path):
    cfg = compose(
        "data=kaggle",
        f"data.dir={tiny_data}",
        "schedule=linear",
        "loss=mse",
        "epoch_budget.scratch=100",
        f"paths.output_dir={tmp_path}",
        f"paths.cache_dir={tmp_path}/cache",
        "trainer.enable_progress_bar=false",
        *TINY_NET,
    )
    metrics = fit(cfg)
    assert metrics["epochs"] == int(100 / metrics["n_train"]) > 1
    config = (tmp_path / "config.yaml").read_text()
    assert f"max_epochs: {metrics['epochs']}" in config and f"epochs: {metrics['epochs']}\n" in config
    # The run's TensorBoard events hold the grid of validation faces with their keypoints.
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    (image,) = events.Images("valid_faces")
    assert image.width > 300 and image.height > 300
    # Learning curves are plotted against epochs, one point each (not against optimiser steps).
    for curve in ["train_loss", "valid_loss", "valid_rmse_px"]:
        assert [e.step for e in events.Scalars(curve)] == list(range(metrics["epochs"]))


def test_multirun_jobs_spread_over_the_gpus(monkeypatch):
    cfg = compose("trainer=gpu")
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        hydra_cfg = hydra_compose("config", ["hydra.job.num=5", "hydra.mode=MULTIRUN"], return_hydra_config=True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    HydraConfig.instance().set_config(hydra_cfg)
    spread_over_gpus(cfg)
    assert list(cfg.trainer.devices) == [1]  # job 5 of a multirun on 4 GPUs
    with open_dict(cfg):
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.devices = 1
    spread_over_gpus(cfg)
    assert cfg.trainer.devices == 1  # CPU runs are left alone


def test_the_pipeline_sweeps_every_specialist_when_the_preset_names_none(monkeypatch, tmp_path):
    calls = []

    def train(*args):  # record the two train.py commands instead of training
        calls.append(args)
        if len(calls) == 2:
            raise SystemExit(0)

    monkeypatch.setattr(specialists, "train", train)
    with pytest.raises(SystemExit):
        specialists.pipeline(["experiment=fast", f"hydra.sweep.dir={tmp_path}"])
    base, multirun = calls
    assert "specialist=all" in base and not any(a.startswith("specialist=e") for a in base)
    assert multirun[0] == "-m" and f"specialist={','.join(KAGGLE15.specialists)}" in multirun
    assert f"init_from={tmp_path / 'all'}" in multirun
