"""Loading trained runs: finding them, rebuilding their nets, assembling columns, flip test-time augmentation."""

import numpy as np
import pytest
import torch
from conftest import KAGGLE15, make_run

from keypoints.core.errors import DataError
from keypoints.inference import runs as trained
from keypoints.training import rundir

COLUMNS = KAGGLE15.columns


def test_find_takes_sweeps_runs_and_checkpoints(sweep, tmp_path):
    assert sorted(r.cfg.specialist for r in trained.find([sweep])) == ["all", "eyes"]
    (run,) = trained.find([sweep / "0_eyes" / "checkpoints" / "best.ckpt"])
    assert run.dir == sweep / "0_eyes" and run.columns == KAGGLE15.specialist("eyes").columns
    with pytest.raises(DataError, match="empty: no checkpoint, run directory"):
        trained.find([tmp_path / "empty"])


def test_a_sweeps_failed_run_is_skipped_with_one_line_unless_strict(sweep, caplog):
    (sweep / "0_eyes" / "error.txt").write_text("job 0: specialist=eyes\nSlurm job 7 was cancelled (CANCELLED by 0)\n")
    model, runs = trained.load([sweep])
    assert [r.cfg.specialist for r in runs] == ["all"] and model.columns == list(COLUMNS)  # eyes' from the base net
    assert caplog.messages == [
        f"skipped {sweep / '0_eyes'}: its run failed (Slurm job 7 was cancelled (CANCELLED by 0))"
    ]
    with pytest.raises(DataError, match="0_eyes: its run failed .*; without --strict it is skipped"):
        trained.find([sweep], strict=True)
    assert [r.cfg.specialist for r in trained.find([sweep / "0_eyes"])] == ["eyes"]  # named itself: loaded


def test_a_specialist_wins_over_the_all_net_for_its_columns(sweep):
    model, runs = trained.load([sweep])
    nets = {r.cfg.specialist: (r.net(), r.columns) for r in runs}
    x = torch.rand(5, 1, 96, 96)
    combined = model.predict(x, 4)
    assert model.columns == list(COLUMNS)
    with torch.no_grad():
        alone = {name: net(x).numpy() * 48 + 48 for name, (net, _) in nets.items()}
    eyes = [COLUMNS.index(c) for c in nets["eyes"][1]]
    others = [i for i in range(len(COLUMNS)) if i not in eyes]
    assert np.allclose(combined[:, eyes], alone["eyes"], atol=1e-4)
    assert np.allclose(combined[:, others], alone["all"][:, others], atol=1e-4)
    assert not np.allclose(combined[:, eyes], alone["all"][:, eyes], atol=1e-2)


def test_a_specialist_alone_predicts_only_its_columns(sweep):
    model, _ = trained.load([sweep / "0_eyes"])
    assert model.columns == ["left_eye_center_x", "left_eye_center_y", "right_eye_center_x", "right_eye_center_y"]
    assert model.predict(torch.rand(3, 1, 96, 96), 2).shape == (3, 4)


def test_flip_tta_averages_with_the_mirrored_face_mirrored_back(sweep):
    plain, runs = trained.load([sweep / "all"])
    flipped, _ = trained.load([sweep / "all"], flip=True)
    x = torch.rand(4, 1, 96, 96)
    a, b = plain.predict(x, 4), plain.predict(x.flip(-1), 4)
    # The mirrored face's keypoints, back in the face's frame: x -> 96 - x, left and right swapped.
    back = b.copy()
    back[:, 0::2] = 96 - back[:, 0::2]
    for i, j in KAGGLE15.specialist("all").flip_indices:
        back[:, [i, j]] = back[:, [j, i]]
    np.testing.assert_allclose(flipped.predict(x, 4), (a + back) / 2, atol=1e-3)
    # A face and its mirror image get mirrored predictions.
    twin = flipped.predict(x.flip(-1), 4)
    twin[:, 0::2] = 96 - twin[:, 0::2]
    for i, j in KAGGLE15.specialist("all").flip_indices:
        twin[:, [i, j]] = twin[:, [j, i]]
    np.testing.assert_allclose(flipped.predict(x, 4), twin, atol=1e-3)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"\x00" * 64])
def test_a_truncated_or_corrupt_checkpoint_is_reported_as_such(tiny_data, tmp_path, damage):
    run = make_run(tmp_path / "run", tiny_data)
    ckpt = run / "checkpoints" / "best.ckpt"
    intact = ckpt.read_bytes()
    ckpt.write_bytes(damage(intact))
    (run / "checkpoints" / "last.ckpt").symlink_to("best.ckpt")  # the same file: no help
    with pytest.raises(DataError, match=rf"^{ckpt} is truncated or corrupt \(.+\); the run's last good state is lost$"):
        trained.load([run])
    (run / "checkpoints" / "last.ckpt").unlink()
    (run / "checkpoints" / "last.ckpt").write_bytes(intact)  # a file of its own, as a copy without links leaves it
    with pytest.raises(
        DataError, match=rf"^{ckpt} is truncated or corrupt \(.+\); use {run}/checkpoints/last.ckpt instead$"
    ):
        trained.load([run])
    assert trained.load([run / "checkpoints" / "last.ckpt"])[1][0].dir == run


def test_a_moved_run_is_read_where_it_is_now(tiny_data, tmp_path):
    trained_in = make_run(tmp_path / "a" / "run", tiny_data)
    moved = tmp_path / "b" / "run"
    moved.parent.mkdir()
    trained_in.rename(moved)
    (run,) = trained.find([moved])
    assert run.cfg.paths.output_dir == str(moved) and run.checkpoint == moved / "checkpoints" / "best.ckpt"
    assert run.cfg.callbacks.checkpoint.dirpath == str(moved / "checkpoints")
    assert run.cfg.data.dir == str(tiny_data)  # outside the run: as it was given


def test_relocated_moves_only_paths_inside_the_old_directory():
    state = {
        "dirpath": "/a/run",
        "best": "/a/run/checkpoints/best.ckpt",
        "paths": ["/a/run2/x", "/a/runs", "/a"],
        "models": {"/a/run/best.ckpt": 1.0},
        "n": 3,
    }
    assert rundir.relocated(state, "/a/run/", "/b/r") == {
        "dirpath": "/b/r",
        "best": "/b/r/checkpoints/best.ckpt",
        "paths": ["/a/run2/x", "/a/runs", "/a"],
        "models": {"/b/r/best.ckpt": 1.0},
        "n": 3,
    }


def test_a_run_trained_before_the_modules_moved_into_layers_still_loads(tiny_data, tmp_path):
    run = make_run(
        tmp_path / "run",
        tiny_data,
        net_overrides=(
            "net=resnet",
            "net.backbone.stem=[8]",
            "net.backbone.channels=[8,16]",
            "net.backbone.blocks=[1,1]",
        ),
    )
    x = torch.rand(3, 1, 96, 96)
    today = trained.load([run])[0].predict(x, 2)
    config = run / "config.yaml"
    text = config.read_text()
    for new, old in [
        ("keypoints.models.resnet.", "keypoints.resnet."),
        ("keypoints.data.kaggle.", "keypoints.data."),
        ("keypoints.training.callbacks.", "keypoints.callbacks."),
    ]:
        assert new in text
        text = text.replace(new, old)
    config.write_text(text)
    (loaded,) = trained.find([run])
    assert loaded.cfg.net._target_ == "keypoints.models.resnet.Regression"
    assert loaded.cfg.callbacks.early_stopping._target_ == "keypoints.training.callbacks.EarlyStopping"
    np.testing.assert_array_equal(trained.load([run])[0].predict(x, 2), today)
