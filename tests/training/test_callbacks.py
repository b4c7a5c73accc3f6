import math
import random
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader

from keypoints.specialists import packed
from keypoints.training.callbacks import EarlyStopping, Judge


class Scripted(pl.LightningModule):
    """A module whose weight moves every step and whose valid loss follows a script."""

    def __init__(self, losses):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.losses, self.weights = losses, []

    def training_step(self, batch, batch_idx):
        return (self.w - 10).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log("valid_loss", self.losses[self.current_epoch])

    def on_validation_epoch_end(self):
        self.weights.append(self.w.item())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(torch.zeros(2, 1))

    val_dataloader = train_dataloader


def quiet_trainer(stopper, max_epochs: int, tmp_path) -> pl.Trainer:
    """A Trainer with `stopper` alone: no logger, checkpoints, bar or sanity check."""
    return pl.Trainer(
        max_epochs=max_epochs,
        callbacks=[stopper],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    module = Scripted([5.0, 3.0, 1.0, 2.0, 4.0, 6.0, 0.5, 0.1])
    stopper = EarlyStopping(monitor="valid_loss", patience=3)
    trainer = quiet_trainer(stopper, 8, tmp_path)
    trainer.fit(module)
    assert trainer.current_epoch == 6  # epochs 3, 4, 5 did not improve on epoch 2
    assert stopper.best_epoch == 2
    assert module.w.item() == module.weights[2] != module.weights[-1]
    trainer.validate(module, dataloaders=module.val_dataloader(), verbose=False)
    assert stopper.best_epoch == 2  # validating afterwards does not count as an epoch


def test_checkpoints_hold_the_best_weights_once_and_restore_them(tmp_path):
    module = Scripted([3.0, 1.0, 2.0])
    stopper = EarlyStopping(monitor="valid_loss", patience=5)
    checkpoint = pl.callbacks.ModelCheckpoint(tmp_path, "best", monitor="valid_loss", save_last="link")
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[stopper, checkpoint],
        logger=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(module)
    with torch.no_grad():
        module.w.fill_(99.0)  # as if saved later in training (say on an interrupt), away from the best
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    for name in ["best.ckpt", "last.ckpt", "after.ckpt"]:
        ckpt = torch.load(tmp_path / name, weights_only=False)
        restored = EarlyStopping(monitor="valid_loss", patience=5)
        restored.on_load_checkpoint(trainer, module, ckpt)  # Lightning's order when resuming
        restored.load_state_dict(ckpt["callbacks"][restored.state_key])
        assert restored.best_epoch == 1 and restored.best_weights["w"].item() == module.weights[1] != 99.0
    # Saved at the best step, the checkpoint holds its weights once, not twice.
    assert (
        torch.load(tmp_path / "best.ckpt", weights_only=False)["callbacks"][stopper.state_key]["best_weights"]
        == "state_dict"
    )


def epoch_end(epoch, value, module):
    """What early stopping's public hooks read of a Trainer at the end of epoch `epoch`, validated to `value`."""
    return SimpleNamespace(
        state=SimpleNamespace(fn=TrainerFn.FITTING),
        sanity_checking=False,
        fast_dev_run=False,
        val_check_interval=1.0,
        check_val_every_n_epoch=1,
        callback_metrics={"valid_loss": torch.tensor(value)},
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision),
        should_stop=False,
        current_epoch=epoch,
        global_step=10 * epoch,
        lightning_module=module,
    )


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("check_finite", [True, False])
def test_the_judge_decides_as_lightnings_early_stopping(mode, check_finite):
    rng = random.Random(f"{mode}{check_finite}")
    for _ in range(300):
        settings = {
            "monitor": "valid_loss",
            "mode": mode,
            "patience": rng.choice([1, 2, 3, 5]),
            "min_delta": rng.choice([0.0, 0.05, 0.1, 0.25, -0.05]),
            "check_finite": check_finite,
        }
        values = []  # a walk on a coarse grid: ties, steps of exactly min_delta, and now and then not finite
        for _ in range(30):
            if rng.random() < 0.05:
                values.append(rng.choice([math.nan, math.inf, -math.inf]))
            else:
                last = values[-1] if values and math.isfinite(values[-1]) else 1.0
                values.append(last + rng.randint(-6, 6) / 20)
        theirs, ours, module = pl.callbacks.EarlyStopping(**settings), EarlyStopping(**settings), torch.nn.Linear(1, 1)
        improved = None
        for epoch, value in enumerate(values):
            with torch.no_grad():
                module.weight.fill_(epoch)
            trainers, before = [epoch_end(epoch, value, module) for _ in range(2)], theirs.best_score
            for callback, trainer in zip((theirs, ours), trainers):
                callback.setup(trainer, module, "fit")
                callback.on_train_epoch_end(trainer, module)
            improved = epoch if theirs.best_score is not before else improved
            assert trainers[1].should_stop == trainers[0].should_stop, (settings, values[: epoch + 1])
            assert (ours.wait_count, ours.stopped_epoch) == (theirs.wait_count, theirs.stopped_epoch)
            assert torch.equal(ours.best_score, theirs.best_score)
            assert ours.best_epoch == improved
            assert ours.best_weights is None if improved is None else ours.best_weights["weight"].item() == improved
            if trainers[0].should_stop:
                break


def test_packed_specialists_and_lightning_share_the_judge(tiny_data, tmp_path, monkeypatch):
    judged, verdict = [], Judge.verdict

    def spy(judge, value, epoch, step, module):
        judged.append((judge, epoch))
        return verdict(judge, value, epoch, step, module)

    monkeypatch.setattr(Judge, "verdict", spy)
    stopper = EarlyStopping(monitor="valid_loss", patience=1)
    trainer = quiet_trainer(stopper, 3, tmp_path)
    trainer.fit(Scripted([1.0, 2.0, 0.5]))
    assert judged == [(stopper, 0), (stopper, 1)]
    judged.clear()
    packed.train(
        ["data=kaggle", f"data.dir={tiny_data}", f"paths.cache_dir={tmp_path}/cache", *TINY, "trainer.max_epochs=2"]
        + ["trainer.precision=32", "specialist=eyes,nose", f"hydra.sweep.dir={tmp_path}/sweep"]
    )
    assert [type(judge) for judge, _ in judged] == [EarlyStopping] * 4  # each job's run's own
    assert sorted(epoch for _, epoch in judged) == [0, 0, 1, 1] and len({judge for judge, _ in judged}) == 2
