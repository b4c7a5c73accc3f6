"""The progress bar (keypoints/training/progress.py) and the quiet libraries (keypoints/training/quiet.py)."""

import io
import logging
import os
import re
import sys
import warnings

import pytest
import pytorch_lightning as pl
from conftest import TINY, compose, run_train
from lightning_fabric.plugins.environments import slurm
from pytorch_lightning.demos.boring_classes import BoringModel
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.trainer.connectors.logger_connector import result
from pytorch_lightning.utilities.rank_zero import WarningCache

from keypoints.training import quiet
from keypoints.training.fit import build
from keypoints.training.progress import ProgressLine

EPOCH_LINE = re.compile(
    r"epoch (\d+)/2 \(\d+:\d\d left\)  step \d+  RMSE [\d.]+ px  NME [\d.]+ %  train loss \S+  valid loss \S+"
)


def fitted(tiny_data, tmp_path, *overrides: str) -> pl.Trainer:
    """A tiny run of 3 epochs of 4 batches (TINY's bar off; `overrides` after), built as train.py builds it."""
    cfg = compose(
        "data=kaggle",
        f"data.dir={tiny_data}",
        "data.batch_size=16",
        *TINY,
        "trainer.max_epochs=3",
        f"paths.output_dir={tmp_path / 'run'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *overrides,
    )
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    return trainer


def test_into_a_file_one_line_per_epoch(tiny_data, tmp_path, capsys):
    trainer = fitted(tiny_data, tmp_path, "trainer.enable_progress_bar=true")
    assert isinstance(trainer.progress_bar_callback, ProgressLine)  # in place of Lightning's own
    lines = capsys.readouterr().out.splitlines()
    assert [int(EPOCH_LINE.fullmatch(line)[1]) for line in lines] == [0, 1, 2], lines


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_one_line_rewritten_in_place(tiny_data, tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setenv("COLUMNS", "200")  # the whole line: a narrower terminal cuts its end
    monkeypatch.setattr("keypoints.training.progress.REFRESH_S", 0.0)  # every batch
    fitted(tiny_data, tmp_path, "trainer.enable_progress_bar=true")
    out = terminal.getvalue()
    assert out.endswith("\n") and out.count("\n") == 1, out  # the line ends with the run, not before
    shown = [line.removesuffix("\x1b[K") for line in out[:-1].split("\r")[1:]]
    assert len(shown) == 3 * 4 + 3  # after each batch, and each epoch's validation
    assert shown[0].startswith("epoch 0/2  step 1") and EPOCH_LINE.fullmatch(shown[-1])[1] == "2"


def test_enable_progress_bar_false_shows_none(tiny_data, tmp_path, capsys):
    trainer = fitted(tiny_data, tmp_path, "trainer.max_epochs=2")
    assert trainer.progress_bar_callback is None
    assert capsys.readouterr().out == ""


# Each of quiet.WARNINGS as Lightning says it: emitted through its own code.
def srun_note(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm.shutil, "which", lambda name: "/usr/bin/srun")
    monkeypatch.delenv("SLURM_NTASKS", raising=False)  # not in a Slurm job
    slurm.SLURMEnvironment._validate_srun_used()


def leafspec(tmp_path, monkeypatch):
    from pytorch_lightning.utilities._pytree import _tree_flatten

    _tree_flatten(1.0)


def boring_fit(tmp_path, model) -> None:
    """Two steps of a model of Lightning's demos, logged as kfkd's runs are."""
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,  # fewer than log_every_n_steps
        limit_val_batches=0,
        logger=TensorBoardLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model)


def logging_interval(tmp_path, monkeypatch):
    boring_fit(tmp_path, BoringModel())


class LogsEpochAsStep(BoringModel):
    def on_train_epoch_end(self):
        self.log("step", float(self.current_epoch))  # as KeypointsModule does


def step_not_synced(tmp_path, monkeypatch):
    monkeypatch.setattr(result, "_distributed_is_initialized", lambda: True)  # as under DDP, without its processes
    monkeypatch.setattr(result, "warning_cache", WarningCache())  # else said once a process
    boring_fit(tmp_path, LogsEpochAsStep())


def overfit_shuffling(tmp_path, monkeypatch):
    import torch
    from pytorch_lightning.trainer.connectors.data_connector import _resolve_overfit_batches
    from pytorch_lightning.trainer.states import RunningStage
    from pytorch_lightning.utilities import CombinedLoader

    loader = torch.utils.data.DataLoader(range(4), shuffle=True)
    _resolve_overfit_batches(CombinedLoader([loader]), RunningStage.TRAINING)


@pytest.mark.parametrize("emit", [srun_note, leafspec, logging_interval, step_not_synced, overfit_shuffling])
def test_quiet_filters_each_known_warning(emit, tmp_path, monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emit(tmp_path, monkeypatch)
        said = [str(w.message) for w in caught if any(re.match(m, str(w.message)) for m, _, _ in quiet.WARNINGS)]
        assert said, f"Lightning no longer says it: drop its filter from quiet.WARNINGS ({emit.__name__})"
        caught.clear()
        quiet.install(verbose=False)
        emit(tmp_path, monkeypatch)
        assert not [w for w in caught if str(w.message) in said]
        warnings.warn("a user's own warning", UserWarning, stacklevel=1)
        assert [str(w.message) for w in caught][-1] == "a user's own warning"


@pytest.fixture
def lightning_logging():
    """The loggers quiet.install sets, put back after the test."""
    loggers = [logging.getLogger(name) for name in (*quiet.LIGHTNING, quiet.PROFILER, quiet.RANK_ZERO)]
    saved = [(logger, logger.level, list(logger.filters)) for logger in loggers]
    yield
    for logger, level, filters in saved:
        logger.setLevel(level)
        logger.filters[:] = filters


class Said(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("verbose", [False, True])
def test_lightnings_info_lines_only_when_verbose_and_never_its_tips(verbose, tmp_path, lightning_logging):
    said = Said()
    logging.getLogger(quiet.RANK_ZERO).addHandler(said)
    try:
        quiet.install(verbose)
        pl.Trainer(logger=TensorBoardLogger(tmp_path), enable_progress_bar=False)  # GPU available, the litlogger tip
        logging.getLogger(quiet.RANK_ZERO).warning("a real problem")
    finally:
        logging.getLogger(quiet.RANK_ZERO).removeHandler(said)
    assert not [line for line in said.lines if quiet.TIP in line]
    assert any(line.startswith("GPU available") for line in said.lines) == verbose
    assert said.lines[-1] == "a real problem"
    assert logging.getLogger("pytorch_lightning.profilers.profiler").isEnabledFor(logging.INFO)  # debug=profiler


NOISE = (
    "LeafSpec",  # torch's deprecation, through Lightning
    "srun",
    "Tip:",
    "litlogger",
    "GPU available",
    "TPU available",
    "Trainer.fit` stopped",
    "Loading `train_dataloader`",
    "logging interval",
    "Trainable params",  # the model summary
    "Validation",  # Lightning's bar
)


@pytest.mark.slow
def test_train_py_prints_no_library_noise(tiny_data, tmp_path, monkeypatch):
    """As a user runs it, on a host with Slurm's client (a stand-in srun here): the progress lines and the
    result, and nothing of the libraries'."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    proc = run_train(
        tmp_path,
        "data=kaggle",
        f"data.dir={tiny_data}",
        *TINY,
        "trainer.enable_progress_bar=true",
        "trainer.max_epochs=3",
        f"paths.cache_dir={tmp_path / 'cache'}",
    )
    out = proc.stdout + proc.stderr
    assert not [noise for noise in NOISE if noise in out], out
    assert not re.search(r"site-packages|Warning|deprecat", out, re.IGNORECASE), out
    epochs = [EPOCH_LINE.fullmatch(line) for line in proc.stdout.splitlines() if line.startswith("epoch")]
    assert [int(m[1]) for m in epochs] == [0, 1, 2], proc.stdout
