import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from keypoints.training.callbacks import EarlyStopping


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


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    module = Scripted([5.0, 3.0, 1.0, 2.0, 4.0, 6.0, 0.5, 0.1])
    stopper = EarlyStopping(monitor="valid_loss", patience=3)
    trainer = pl.Trainer(
        max_epochs=8,
        callbacks=[stopper],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
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
