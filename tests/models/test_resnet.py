"""The residual nets (net=resnet, net=heatmap): they train, rebuild from their run, and hand their
weights to specialists."""

import pytest
import torch
from conftest import TINY_HEATMAP, TINY_RESNET, compose, make_run
from hydra.utils import instantiate

from keypoints.inference import runs as trained
from keypoints.models.heatmap import HeatmapNet
from keypoints.models.nets import output_layer
from keypoints.models.resnet import Backbone
from keypoints.training import rundir
from keypoints.training.fit import fit
from keypoints.training.transfer import init_from

NETS = {"resnet": TINY_RESNET, "heatmap": TINY_HEATMAP}


@pytest.mark.parametrize("net", NETS)
def test_a_few_training_steps_lower_the_loss_and_the_run_rebuilds(net, tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg = compose(
        "experiment=fast",
        "data=kaggle",
        f"data.dir={tiny_data}",
        "data.batch_size=16",
        "trainer.max_epochs=4",
        "augment=none",
        f"paths.output_dir={out}",
        f"paths.cache_dir={tmp_path}/cache",
        "trainer.enable_progress_bar=false",
        "schedule=constant",  # one-cycle's peak would make 4 epochs' losses rise before they fall
        *NETS[net],
    )
    torch.manual_seed(0)
    before = instantiate(cfg.net, n_outputs=30).state_dict()
    metrics = fit(cfg)
    losses = [e["train_loss"] for e in metrics["history"]]
    assert metrics["epochs"] == 4 and losses[-1] < losses[0], losses
    model, (run,) = trained.load([out])  # rebuilt from the run's config.yaml alone
    after = run.net().state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    assert model.predict(torch.rand(2, 1, 96, 96), 2).shape == (2, 30)


@pytest.mark.parametrize("net", ["cnn", "cnn_bn", "mlp", "resnet", "heatmap"])
def test_the_output_layer_is_the_only_one_whose_shape_follows_the_columns(net):
    cfg = compose(f"net={net}")
    wide, narrow = (instantiate(cfg.net, n_outputs=n).state_dict() for n in (30, 4))
    head = output_layer(instantiate(cfg.net, n_outputs=4))
    differ = sorted(k for k in wide if wide[k].shape != narrow[k].shape)
    assert differ == sorted(k for k in wide if k.startswith(f"{head}.")) != []


def test_a_heatmap_specialist_starts_from_the_base_nets_weights(tiny_data, tmp_path):
    base = make_run(tmp_path / "all", tiny_data, net_overrides=TINY_HEATMAP)
    eyes = instantiate(compose("specialist=eyes", *TINY_HEATMAP).net, n_outputs=4)
    copied = init_from(eyes, base)
    source = rundir.net_weights(base)
    assert sorted(copied) == sorted(k for k in source if not k.startswith("output."))
    assert all(torch.equal(eyes.state_dict()[k], source[k]) for k in copied)


def test_backbone_stage_sizes_and_errors():
    backbone = Backbone(size=96, stem=[8, 16], channels=[16, 32, 64], blocks=[1, 1, 2])
    features = backbone(torch.zeros(2, 1, 96, 96))
    assert [f.shape[1:] for f in features] == [(16, 24, 24), (32, 12, 12), (64, 6, 6)]
    assert backbone.sizes == [24, 12, 6]
    bigger = Backbone(size=128, stem=[8, 16], channels=[16, 32, 64], blocks=[1, 1, 2])
    assert bigger.sizes == [f.shape[-1] for f in bigger(torch.zeros(1, 1, 128, 128))] == [32, 16, 8]
    with pytest.raises(ValueError, match=r"net.backbone: expected one block count >= 1 per stage"):
        Backbone(size=96, stem=[8], channels=[16, 32], blocks=[1])
    with pytest.raises(ValueError, match="a heatmap net predicts x, y pairs; got 3 columns"):
        HeatmapNet(3, backbone, width=4)
