"""The progress bar: one line per run, refreshed in place on a terminal; one plain line per epoch where the
output is not a terminal (a file, Slurm, CI), or is shared by a multirun's jobs. Validation shows no bar."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from pytorch_lightning.callbacks import ProgressBar

# What the line shows after the epoch and step, as (logged metric, label, format), the headline first: a
# terminal narrower than the line cuts its end. The NME only where the run reports it.
SHOWN = (
    ("valid_rmse_px", "RMSE", "{:.3f} px"),
    ("valid_nme_pct", "NME", "{:.2f} %"),
    ("train_loss", "train loss", "{:.4g}"),
    ("valid_loss", "valid loss", "{:.4g}"),
)
REFRESH_S = 0.1  # a terminal's line is rewritten at most this often: fast nets end many batches a second


def bar(enabled: bool) -> list[ProgressLine]:
    """The progress bar of a run with `trainer.enable_progress_bar` = `enabled` (conf/callbacks): Lightning
    refuses a progress bar callback on a Trainer whose bar is disabled."""
    if not enabled:
        return []
    return [ProgressLine(shared=HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)]


def clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class ProgressLine(ProgressBar):
    """Epoch, step, the losses, valid RMSE (and NME), and the time left as the epochs so far took."""

    def __init__(self, shared: bool = False):
        """`shared`: jobs that may run at once (a multirun's, with joblib) write to the same output, so each
        writes whole lines, named by its run directory."""
        super().__init__()
        self.shared = shared
        self.enabled = True
        self.open = False  # a terminal's line is written and not yet ended
        self.shown = 0.0  # when it was last written

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def get_metrics(self, trainer, pl_module) -> dict[str, float]:
        logged = trainer.callback_metrics
        return {name: float(logged[name]) for name, _, _ in SHOWN if name in logged}

    def on_train_start(self, trainer, pl_module) -> None:
        self.started, self.first_epoch = time.monotonic(), trainer.current_epoch  # a resumed run's estimate: its own
        self.end = None  # when the run should end, as the epochs so far took
        self.terminal = sys.stdout.isatty() and not self.shared
        self.name = f"{Path(trainer.default_root_dir).name}: " if self.shared else ""

    def line(self, trainer) -> str:
        """Where the run is; mid-epoch, with the last epoch's metrics."""
        epoch = f"epoch {trainer.current_epoch}/{trainer.max_epochs - 1}"
        if self.end is not None:
            epoch += f" ({clock(max(0.0, self.end - time.monotonic()))} left)"
        metrics = self.get_metrics(trainer, trainer.lightning_module)
        shown = [f"{label} {form.format(metrics[name])}" for name, label, form in SHOWN if name in metrics]
        return self.name + "  ".join([epoch, f"step {trainer.global_step}", *shown])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.enabled and self.terminal and time.monotonic() - self.shown >= REFRESH_S:
            self.rewrite(self.line(trainer))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.enabled:
            return
        now, epochs = time.monotonic(), trainer.current_epoch + 1 - self.first_epoch
        self.end = now + (now - self.started) / epochs * (trainer.max_epochs - trainer.current_epoch - 1)
        if self.terminal:
            self.rewrite(self.line(trainer))
        else:
            print(self.line(trainer), flush=True)

    def rewrite(self, line: str) -> None:
        """Write `line` over the terminal's current one, cut to its width (a wrapped line could not be rewritten)."""
        width = shutil.get_terminal_size().columns - 1
        sys.stdout.write(f"\r{line[:width]}\x1b[K")  # \x1b[K: clear what a longer line left
        sys.stdout.flush()
        self.open, self.shown = True, time.monotonic()

    def end_line(self) -> None:
        if self.open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.open = False

    def on_train_end(self, trainer, pl_module) -> None:
        self.end_line()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.end_line()  # the error's or the interruption's message on a line of its own
