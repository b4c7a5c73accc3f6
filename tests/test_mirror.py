import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import TINY, compose, make_run
from keypoints import mirror, runs as trained
from keypoints.columns import COLUMNS
from keypoints.submit import labelled_faces


def labels(n=50, seed=0):
    y = np.random.default_rng(seed).uniform(10, 86, (n, len(COLUMNS)))
    y[::3, 4:] = np.nan  # rows with only some keypoints, as Kaggle's
    return y


def test_partners_are_the_base_nets_flip_indices():
    cfg = compose()
    pairs = {tuple(sorted(p)) for p in cfg.specialist.flip_indices}
    swapped = {tuple(sorted((i, COLUMNS.index(mirror.partner(c))))) for i, c in enumerate(COLUMNS) if mirror.partner(c) != c}
    assert swapped == pairs


def test_mirroring_labels_twice_is_identity_and_offsets_are_recovered():
    y = labels()
    assert np.allclose(mirror.mirror_labels(mirror.mirror_labels(y)), y, equal_nan=True)
    shift = np.linspace(-2, 2, len(COLUMNS))  # where the labels would put each mirrored keypoint
    found = mirror.offsets(mirror.mirror_labels(y) + shift, y)
    assert list(found) == list(COLUMNS) and np.allclose(list(found.values()), shift)
    y[:, COLUMNS.index("nose_tip_x")] = np.nan  # nothing to measure: left out
    assert "nose_tip_x" not in mirror.offsets(mirror.mirror_labels(y) + shift, y)


class Constant(nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, x):
        return self.value.expand(len(x), -1)


def test_flip_tta_takes_a_runs_mirror_offsets_off():
    cfg = compose()
    value = torch.linspace(-0.5, 0.5, len(COLUMNS))
    assemble = lambda offsets: trained.Assembled([Constant(value)], [list(COLUMNS)], [list(cfg.specialist.flip_indices)],
                                                 flip=True, mirror=[offsets])
    faces = torch.zeros(2, 1, 96, 96)
    moved = assemble({"left_eye_center_x": 2.0, "left_eye_center_y": 1.0})(faces) - assemble(None)(faces)
    # The mirrored face's left eye is the face's right eye: half of each offset, x mirrored, y not.
    expected = torch.zeros(len(COLUMNS))
    expected[COLUMNS.index("right_eye_center_x")], expected[COLUMNS.index("right_eye_center_y")] = 1.0, -0.5
    assert torch.allclose(moved, expected.expand_as(moved), atol=1e-5)


def test_the_command_measures_a_run_and_writes_a_mirror_preset(tiny_data, tmp_path, capsys):
    run = make_run(tmp_path / "run", tiny_data, net_overrides=(*TINY, "augment=[affine,photometric]"))
    weights = torch.load(run / "checkpoints" / "best.ckpt")
    state = weights["state_dict"]
    last = [k for k in state if k.endswith(".weight")][-1]  # the output layer: the net answers its bias alone
    state[last].zero_()
    torch.save(weights, run / "checkpoints" / "best.ckpt")
    out = tmp_path / "realish.yaml"
    mirror.main([str(run), "--out", str(out)])
    assert "faces: mirrored labels are off by" in capsys.readouterr().err
    found = OmegaConf.load(out).offsets
    bias = trained.load([run])[0].nets[0](torch.zeros(1, 1, 96, 96))[0].detach().numpy() * 48 + 48
    _, y = labelled_faces(trained.find([run]), None, rows="train")
    expected = bias - np.nanmean(mirror.mirror_labels(y), axis=0)
    assert list(found) == list(COLUMNS) and np.allclose(list(found.values()), expected, atol=0.006)  # 2 decimals
    # What it wrote is a conf/mirror preset the flip takes.
    flip = compose("augment=[flip]", *(f"+mirror.offsets.{c}={v}" for c, v in found.items())).augment.flip
    assert dict(flip.offsets) == dict(found)
    with pytest.raises(SystemExit, match="realish.yaml: exists; give --out a new file"):
        mirror.main([str(run), "--out", str(out)])


def test_a_run_trained_with_flips_is_refused(tiny_data, tmp_path):
    run = make_run(tmp_path / "run", tiny_data)  # the default preset flips
    with pytest.raises(SystemExit, match="trained with flips, so it learnt the mirror it was given"):
        mirror.main([str(run)])
