import pytorch_lightning as pl
import torch

from keypoints.callbacks import EarlyStopping
from keypoints.checkpoints import PacedCheckpointIO
from test_callbacks import Scripted


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
    trainer = pl.Trainer(max_epochs=4, callbacks=[EarlyStopping(monitor="valid_loss", patience=5), checkpoint],
                         plugins=[PacedCheckpointIO(min_interval_s=3600)], logger=False,
                         enable_progress_bar=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(module)
    for name in ["best.ckpt", "last.ckpt"]:
        ckpt = torch.load(tmp_path / name, weights_only=False)
        assert ckpt["epoch"] == 2 and ckpt["state_dict"]["w"].item() == module.weights[2] == module.w.item()
