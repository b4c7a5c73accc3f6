import pytest
import torch
from conftest import KAGGLE15, ROOT, compose
from hydra.utils import instantiate
from omegaconf import OmegaConf

from keypoints.core import keypointset
from keypoints.data import synthetic
from keypoints.training.fit import build

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
OPTIONS = [
    f"{group}={p.stem}"
    for group in ("net", "loss", "augment", "mirror", "averaging", "optimizer", "schedule")
    for p in sorted((ROOT / "conf" / group).glob("*.yaml"))
]
KEYPOINT_SET = {"mirror=faces68": "keypoints=ibug68"}  # options made for another set than the default


def test_the_default_set_is_kaggle15_whose_all_specialist_reads_kaggles_columns_in_order():
    cfg = compose()
    assert cfg.keypoints.name == "kaggle15" and cfg.specialist == "all"
    assert keypointset.specialist(cfg).columns == KAGGLE15.columns == synthetic.COLUMNS  # training.csv's 30


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, tmp_path):
    cfg = compose(f"experiment={experiment}", f"paths.output_dir={tmp_path}", "data.dir=unused")
    datamodule, module, trainer = build(cfg)
    out = module(torch.zeros(2, 1, cfg.data.size, cfg.data.size))
    assert out.shape == (2, len(keypointset.specialist(cfg).columns))
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_composes_with_fast_and_builds(option, tmp_path):
    keypoint_set = [KEYPOINT_SET[option]] if option in KEYPOINT_SET else []
    cfg = compose("experiment=fast", option, *keypoint_set, f"paths.output_dir={tmp_path}", "data.dir=unused")
    group = option.split("=")[0]
    chosen = (
        OmegaConf.to_container(c[group]) for c in (cfg, compose(option, *keypoint_set))
    )  # interpolations unresolved
    assert next(chosen) == next(chosen)  # the option, not the preset's choice, is what runs
    _, module, _ = build(cfg)
    module.train()
    x, y = torch.zeros(2, 1, cfg.data.size, cfg.data.size), torch.zeros(2, len(keypointset.specialist(cfg).columns))
    loss = module.training_step((x, y, torch.ones_like(y)), 0)
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("net", sorted(p.stem for p in (ROOT / "conf" / "net").glob("*.yaml")))
def test_every_net_takes_the_faces_size_from_data_size(net):
    cfg = compose(f"net={net}", "data.size=128")
    assert instantiate(cfg.net, n_outputs=30)(torch.zeros(2, 1, 128, 128)).shape == (2, 30)


def test_tutorial_steps():
    net = lambda n: compose(f"experiment=net{n}")
    assert net(1).net._target_.endswith("mlp") and net(1).trainer.max_epochs == 400
    assert not net(2).augment and not net(4).augment and "flip" in net(3).augment
    assert net(4).schedule.scheduler.lr == [0.03, 0.0001] and net(4).schedule.scheduler.epochs == 1000
    assert list(net(6).net.dropout) == [0.1, 0.2, 0.3, 0.5, 0.0] and net(7).net.hidden == 1000
