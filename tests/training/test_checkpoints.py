"""Checkpoints: paced in time, written atomically, at home in a moved run directory."""

import os
import shutil
import signal
import subprocess
import sys
import warnings

import pytest
import pytorch_lightning as pl
import torch
from conftest import ROOT
from test_callbacks import Scripted

from keypoints.training.callbacks import EarlyStopping
from keypoints.training.checkpoints import ModelCheckpoint, PacedCheckpointIO


def test_checkpoints_wait_in_memory_as_saved_and_are_written_at_the_end(tmp_path):
    io = PacedCheckpointIO(min_interval_s=3600)
    weights, history = torch.zeros(3), [0]
    io.save_checkpoint({"w": weights, "history": history}, tmp_path / "first.ckpt")
    assert (tmp_path / "first.ckpt").is_file()  # the first one at once: a run can be resumed early
    weights += 1
    history.append(1)
    io.save_checkpoint({"w": weights, "history": history}, tmp_path / "best.ckpt")
    io.save_checkpoint({"w": weights}, tmp_path / "dropped.ckpt")
    io.remove_checkpoint(tmp_path / "dropped.ckpt")
    weights += 1  # training goes on after the save
    history.append(2)
    assert not (tmp_path / "best.ckpt").exists()  # within the interval: not yet on disk
    io.teardown()
    best = torch.load(tmp_path / "best.ckpt")
    assert best["w"].tolist() == [1, 1, 1] and best["history"] == [0, 1]  # as it was when saved
    assert not (tmp_path / "dropped.ckpt").exists()


def test_a_run_with_paced_checkpoints_ends_with_its_best_epoch_on_disk(tmp_path):
    module = Scripted([3.0, 1.0, 0.5, 2.0])
    checkpoint = pl.callbacks.ModelCheckpoint(tmp_path, "best", monitor="valid_loss", save_last="link")
    trainer = pl.Trainer(
        max_epochs=4,
        callbacks=[EarlyStopping(monitor="valid_loss", patience=5), checkpoint],
        plugins=[PacedCheckpointIO(min_interval_s=3600)],
        logger=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module)
    for name in ["best.ckpt", "last.ckpt"]:
        ckpt = torch.load(tmp_path / name, weights_only=False)
        assert ckpt["epoch"] == 2 and ckpt["state_dict"]["w"].item() == module.weights[2] == module.w.item()


KILLED_MIDWAY = """
import os, signal, sys, torch
from keypoints.training.checkpoints import PacedCheckpointIO

directory, target = sys.argv[1:]
io = PacedCheckpointIO(min_interval_s=0)
io.save_checkpoint({"w": torch.zeros(100_000)}, f"{directory}/best.ckpt")
os.symlink("best.ckpt", f"{directory}/last.ckpt")  # as ModelCheckpoint(save_last="link") links it
save = torch.save

def torn(checkpoint, f):  # half the file reaches the disk, then the process is killed
    save(checkpoint, f)
    f.truncate(f.tell() // 2)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = torn
io.save_checkpoint({"w": torch.ones(100_000)}, f"{directory}/{target}")
"""


@pytest.mark.parametrize("target", ["best.ckpt", "last.ckpt"])
def test_a_write_killed_midway_leaves_the_previous_checkpoint(tmp_path, target):
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_MIDWAY, str(tmp_path), target],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (tmp_path / f"{target}.tmp").stat().st_size > 0  # the torn write, under another name
    for name in ["best.ckpt", "last.ckpt"]:
        assert torch.load(tmp_path / name)["w"].sum() == 0  # the previous checkpoint, whole
    assert os.readlink(tmp_path / "last.ckpt") == "best.ckpt"
    PacedCheckpointIO(min_interval_s=0).save_checkpoint({"w": torch.ones(3)}, tmp_path / target)
    assert torch.load(tmp_path / target)["w"].tolist() == [1, 1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]


def checkpointed_run(dirpath, losses, max_epochs, ckpt_path=None):
    """A Scripted run with kfkd's checkpointing (paced writes, last.ckpt linked to best.ckpt)."""
    checkpoint = ModelCheckpoint(dirpath, "best", monitor="valid_loss", save_last="link")
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=[checkpoint],
        plugins=[PacedCheckpointIO(min_interval_s=3600)],
        logger=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        default_root_dir=dirpath,
    )
    trainer.fit(Scripted(losses), ckpt_path=ckpt_path, weights_only=False)
    return checkpoint


def test_a_run_resumed_after_a_move_keeps_its_best_checkpoint(tmp_path):
    losses = [3.0, 1.0, 2.0, 2.5]  # the resumed epochs 2 and 3 are worse than epoch 1
    checkpointed_run(tmp_path / "a", losses, max_epochs=2)
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = tmp_path / "b"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "The dirpath has changed")
        checkpoint = checkpointed_run(moved, losses, max_epochs=4, ckpt_path=moved / "last.ckpt")
    assert checkpoint.best_model_path == str(moved / "best.ckpt") and checkpoint.best_model_score == 1.0
    assert torch.load(moved / "best.ckpt", weights_only=False)["epoch"] == 1
    # As training ended, Lightning saved its state to last.ckpt: in the link's place, not through it into best.ckpt.
    assert not (moved / "last.ckpt").is_symlink() and torch.load(moved / "last.ckpt", weights_only=False)["epoch"] > 1
