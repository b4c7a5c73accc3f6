import numpy as np
import pytest
import torch
from conftest import KAGGLE15, TINY, compose, make_run
from omegaconf import OmegaConf
from torch import nn

from keypoints.inference import mirror
from keypoints.inference import runs as trained
from keypoints.inference.evaluate import labelled_faces
from keypoints.inference.submit import predict_columns

COLUMNS = KAGGLE15.columns
FLIPS = KAGGLE15.specialist("all").flip_indices


EYES = ["left_eye_center_x", "left_eye_center_y", "right_eye_center_x", "right_eye_center_y"]
PAIRS = [[0, 2], [1, 3]]


def test_offsets_are_where_the_mirrored_face_has_its_keypoints_against_the_mirrored_labels():
    labels = np.array(
        [[40.0, 30.0, 60.0, 32.0], [44.0, 31.0, np.nan, np.nan]]
    )  # without its right eye: its mirror has no left eye
    # Mirrored exactly, face 0's left eye (the old right eye) is at (96 - 60, 32), its right eye at
    # (96 - 40, 30); face 1's right eye at (96 - 44, 31).
    predicted = np.array([[37.0, 32.5, 56.0, 29.0], [99.0, 99.0, 53.0, 30.0]])
    found = mirror.offsets(predicted, labels, EYES, PAIRS, 96)
    assert found == pytest.approx(
        {
            "left_eye_center_x": 1.0,
            "left_eye_center_y": 0.5,  # face 0 alone
            "right_eye_center_x": 0.5,
            "right_eye_center_y": -1.0,
        }
    )  # (0 + 1) / 2, (-1 - 1) / 2
    labels[:, 0] = np.nan  # no face with a left eye: the mirrored right eye is left out
    assert "right_eye_center_x" not in mirror.offsets(predicted, labels, EYES, PAIRS, 96)


class Constant(nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = nn.Parameter(value, requires_grad=False)  # a parameter: predict() finds the device by it

    def forward(self, x):
        return self.value.expand(len(x), -1)


def test_flip_tta_takes_a_runs_mirror_offsets_off():
    value = torch.linspace(-0.5, 0.5, len(COLUMNS))
    assemble = lambda offsets: trained.Assembled([Constant(value)], [COLUMNS], [FLIPS], True, KAGGLE15, 96, [offsets])
    faces = torch.zeros(2, 1, 96, 96)
    moved = assemble({"left_eye_center_x": 2.0, "left_eye_center_y": 1.0})(faces) - assemble(None)(faces)
    # The mirrored face's left eye is the face's right eye: half of each offset, x mirrored, y not.
    expected = torch.zeros(len(COLUMNS))
    expected[COLUMNS.index("right_eye_center_x")], expected[COLUMNS.index("right_eye_center_y")] = 1.0, -0.5
    assert torch.allclose(moved, expected.expand_as(moved), atol=1e-5)


class Centroid(nn.Module):
    """A 'net' that goes by what it sees: every keypoint at the image's brightness centroid."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1), requires_grad=False)  # predict() finds the device by it

    def forward(self, x):
        centres = (torch.arange(96.0) + 0.5 - 48) / 48  # pixel centres in the targets' units
        weights = x[:, 0] / x[:, 0].sum((1, 2), keepdim=True)
        return torch.stack([(weights.sum(1) * centres).sum(1), (weights.sum(2) * centres).sum(1)], 1).repeat(1, 15)


def test_a_net_that_goes_by_the_image_follows_a_shift_and_a_constant_does_not():
    i = torch.arange(96.0) + 0.5
    faces = torch.exp(-((i.view(1, -1) - 41) ** 2 + (i.view(-1, 1) - 50) ** 2) / 18).expand(3, 1, 96, 96)
    assemble = lambda net: trained.Assembled([net], [COLUMNS], [FLIPS], False, KAGGLE15, 96)
    runs = [trained.Run(None, None, compose("data.batch_size=2"))]
    assert mirror.follows_shift(assemble(Centroid()), runs, faces, px=1.5) == pytest.approx(1.5, abs=0.01)
    assert mirror.follows_shift(assemble(Constant(torch.zeros(len(COLUMNS)))), runs, faces) == 0


def test_the_command_measures_a_run_and_writes_a_mirror_preset(tiny_data, tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path / "run", tiny_data, net_overrides=(*TINY, "augment=[affine,photometric]"))
    weights = torch.load(run / "checkpoints" / "best.ckpt")
    state = weights["state_dict"]
    last = [k for k in state if k.endswith(".weight")][-1]  # the output layer: the net answers its bias alone
    state[last].zero_()
    torch.save(weights, run / "checkpoints" / "best.ckpt")
    asked = []  # the faces the net is asked about: the mirror images of the training faces
    monkeypatch.setattr(mirror, "predict_columns", lambda *a: asked.append(a[2]) or predict_columns(*a))
    out = tmp_path / "realish.yaml"
    mirror.main([str(run), "--out", str(out)])
    x, y = labelled_faces(trained.find([run]), None, rows="train")
    assert len(asked) == 3 and torch.equal(asked[0], x.flip(-1))  # then x, and x shifted, for follows_shift
    assert "the net follows a 1 px shift of these faces by +0.00 px" in capsys.readouterr().err  # a constant
    found = OmegaConf.load(out).offsets
    bias = trained.load([run])[0].nets[0](torch.zeros(1, 1, 96, 96))[0].detach().numpy() * 48 + 48
    partner = lambda c: c.replace("left", "\0").replace("right", "left").replace("\0", "right")
    mirrored = np.stack(
        [
            96 - y[:, COLUMNS.index(partner(c))] if c.endswith("_x") else y[:, COLUMNS.index(partner(c))]
            for c in COLUMNS
        ],
        1,
    )  # the training faces' labels, mirrored by hand
    expected = bias - np.nanmean(mirrored, axis=0)
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
