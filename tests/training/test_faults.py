"""Faults: diverging losses, interrupted and resumed runs, failing sweep jobs, run directories, the cache."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, compose, run_train
from hydra.types import RunMode
from omegaconf import OmegaConf

from keypoints.core.errors import DataError, RunError
from keypoints.data.kaggle import read_csv
from keypoints.sweeps.summary import slurm_verdict
from keypoints.training.faults import divergence, resume_point
from keypoints.training.fit import fit

# Four batches an epoch: a signal lands inside an epoch, and there are epochs left to resume.
SMALL = (
    "data=kaggle",
    "loss=masked",
    "data.batch_size=16",
    "trainer.max_epochs=5",
    "augment=flip",
    "net=cnn_bn",
    "net.dropout=[0.1,0.2,0.3,0.3,0.5,0.0]",
)


def configure(tmp_path, tiny_data, *overrides):
    """The config of `train.py data.dir=TINY ...` with its run directory in tmp_path/run."""
    return compose(
        "data=kaggle",
        f"data.dir={tiny_data}",
        f"paths.output_dir={tmp_path}/run",
        f"paths.cache_dir={tmp_path}/cache",
        "trainer.enable_progress_bar=false",
        *overrides,
    )


def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_same_seed_and_config_give_the_same_metrics(tiny_data, tmp_path):
    a = fit(configure(tmp_path / "a", tiny_data, *SMALL[1:], "trainer.max_epochs=2"))
    b = fit(configure(tmp_path / "b", tiny_data, *SMALL[1:], "trainer.max_epochs=2"))
    c = fit(configure(tmp_path / "c", tiny_data, *SMALL[1:], "trainer.max_epochs=2", "seed=7"))
    assert a["history"] == b["history"] and a["valid_loss"] == b["valid_loss"]
    assert c["history"] != a["history"]  # the seed does reach the weights, batches and flips


@pytest.mark.slow
def test_diverging_run_stops_and_keeps_its_best_epoch(tiny_data, tmp_path, caplog):
    # lr 0.01 in epoch 0, then 1e6/3: the loss blows up in epoch 1.
    cfg = configure(tmp_path, tiny_data, "schedule=linear", "schedule.scheduler.lr=[0.01,1e6]", "trainer.max_epochs=4")
    result = fit(cfg)
    assert result["diverged"] is not None and result["diverged"].endswith("at epoch 1")
    assert result["epochs"] == 2 and result["best_epoch"] == 0
    assert result["valid_loss"] == pytest.approx(result["history"][0]["valid_loss"], rel=1e-3)
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert (
        f"{result['diverged']}: training stopped; epoch 0's weights restored, its checkpoint kept at {best}"
        in caplog.text
    )
    weights = torch.load(best, weights_only=False)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert metrics(tmp_path / "run")["best_epoch"] == 0


@pytest.mark.slow
def test_run_diverging_in_its_first_epoch_is_an_error(tiny_data, tmp_path):
    with pytest.raises(RunError, match=r"valid_loss became (nan|inf) at epoch 0, before any epoch with finite losses"):
        fit(
            configure(
                tmp_path, tiny_data, "optimizer=sgd", "schedule=constant", "optimizer.lr=1e6", "trainer.max_epochs=3"
            )
        )


def test_divergence_names_the_first_non_finite_loss():
    history = [
        {"epoch": 0, "train_loss": 0.5, "valid_loss": 0.4},
        {"epoch": 1, "train_loss": math.nan, "valid_loss": math.inf},
    ]
    assert divergence(history) == "train_loss became nan at epoch 1"
    assert divergence(history[:1]) is None


@pytest.mark.slow
def test_a_run_directory_is_never_reused(tiny_data, tmp_path):
    cfg = configure(tmp_path, tiny_data, "trainer.max_epochs=1")
    first = fit(cfg)
    with pytest.raises(RunError, match=f"{tmp_path}/run already holds a run; .* resume={tmp_path}/run"):
        fit(cfg)
    assert metrics(tmp_path / "run") == first


def resumable(run, trained_in):
    """A run directory as an interrupted run leaves it, whose config.yaml was saved in `trained_in`;
    its best.ckpt holds `state` and last.ckpt links to it."""
    (run / "checkpoints").mkdir(parents=True)
    OmegaConf.save(
        {
            "paths": {"output_dir": str(trained_in)},
            "trainer": {"max_epochs": 3},
            "callbacks": {"checkpoint": {"dirpath": f"{trained_in}/checkpoints", "filename": "best"}},
        },
        run / "config.yaml",
    )
    torch.save({"epoch": 1}, run / "checkpoints" / "best.ckpt")
    (run / "checkpoints" / "last.ckpt").symlink_to("best.ckpt")
    return run


def resume_hydra(run, *overrides):
    return OmegaConf.create(
        {
            "mode": RunMode.RUN,
            "runtime": {"choices": {"net": "cnn"}},
            "overrides": {"task": [f"resume={run}", *overrides]},
        }
    )


def test_resume_refuses_what_it_cannot_continue_and_takes_new_values(tmp_path):
    run = tmp_path / "run"
    hydra = resume_hydra(run, "trainer.max_epochs=9")
    cfg = OmegaConf.create({"resume": str(run), "trainer": {"max_epochs": 9}, "net": {"name": "mlp"}})
    with pytest.raises(RunError, match=f"{run}: not a run directory"):
        resume_point(cfg, hydra)
    resumable(run, run)
    saved, last = resume_point(cfg, hydra)
    assert last == run / "checkpoints" / "last.ckpt" and saved.trainer.max_epochs == 9 and "net" not in saved
    hydra.overrides.task.append("net=mlp")
    with pytest.raises(RunError, match="keeps the run's config groups and specialist; drop net=mlp"):
        resume_point(cfg, hydra)
    hydra.mode = RunMode.MULTIRUN
    with pytest.raises(RunError, match="drop -m"):
        resume_point(cfg, hydra)
    hydra.mode = RunMode.RUN
    (run / "metrics.json").write_text("{}")
    with pytest.raises(RunError, match="this run has finished"):
        resume_point(cfg, hydra)


def test_a_moved_run_resumes_from_where_it_is_now(tmp_path):
    run = resumable(tmp_path / "b" / "run1", tmp_path / "a" / "run1")  # trained in a/run1, then moved
    saved, last = resume_point(OmegaConf.create({"resume": str(run)}), resume_hydra(run))
    assert last == run / "checkpoints" / "last.ckpt"
    assert saved.paths.output_dir == str(run) and saved.callbacks.checkpoint.dirpath == str(run / "checkpoints")


def test_resume_goes_on_from_best_ckpt_where_last_ckpt_is_missing_or_broken(tmp_path, caplog):
    run = resumable(tmp_path / "run", tmp_path / "run")
    cfg, hydra = OmegaConf.create({"resume": str(run)}), resume_hydra(run)
    last, best = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "best.ckpt"
    last.unlink()  # as `rsync -r`, which copies no links, leaves a run
    assert resume_point(cfg, hydra)[1] == best
    last.write_bytes(best.read_bytes()[:100])  # a file of its own, cut short
    assert resume_point(cfg, hydra)[1] == best
    assert (
        f"{last} is truncated or corrupt (" in caplog.text
        and f"use {best} instead; resuming from {best}" in caplog.text
    )


def test_resume_names_a_broken_or_missing_checkpoint_and_what_is_lost(tmp_path):
    run = resumable(tmp_path / "run", tmp_path / "run")
    cfg, hydra = OmegaConf.create({"resume": str(run)}), resume_hydra(run)
    best = run / "checkpoints" / "best.ckpt"
    best.write_bytes(best.read_bytes()[:100])  # and last.ckpt links to it
    with pytest.raises(
        DataError,
        match=rf"{run}/checkpoints/last.ckpt is truncated or corrupt \(.*\); "
        r"the run's last good state is lost$",
    ):
        resume_point(cfg, hydra)
    for ckpt in (run / "checkpoints").iterdir():
        ckpt.unlink()
    with pytest.raises(
        RunError,
        match=rf"{run}/checkpoints: no last.ckpt or best.ckpt: the run stopped before its "
        r"first epoch ended, or its checkpoints were not copied with it; start it again",
    ):
        resume_point(cfg, hydra)


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("uninterrupted")
    run_train(cwd, *SMALL, f"data.dir={tiny_data}", "hydra.run.dir=run")
    return metrics(cwd / "run")


def interrupt(cwd, tiny_data, sig):
    """cwd/run, a run of SMALL stopped by `sig` after its first checkpoint, before its last epoch."""
    run = cwd / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *SMALL,
            f"data.dir={tiny_data}",
            "hydra.run.dir=run",
            "trainer.enable_progress_bar=false",
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # even where the test runner ignores Ctrl-C
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)  # during epoch 1 or later: epoch 0's checkpoint is there
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + sig, output[-3000:]
    assert f"training stopped; continue it with: python train.py resume={run}" in output
    assert not (run / "metrics.json").exists()
    assert torch.load(last, weights_only=False)["epoch"] < 4  # the run had epochs left
    return run


def resumed_as_uninterrupted(run, uninterrupted, proc):
    """The resumed run ended exactly as the run never stopped, its best.ckpt included."""
    assert f"resuming {os.path.abspath(run)} from" in proc.stdout + proc.stderr
    resumed = metrics(run)
    assert resumed["history"] == uninterrupted["history"]
    assert (resumed["valid_loss"], resumed["best_epoch"]) == (uninterrupted["valid_loss"], uninterrupted["best_epoch"])
    assert torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)["epoch"] == uninterrupted["best_epoch"]
    assert "loss=masked" in (run / ".hydra" / "overrides.yaml").read_text()  # the first record is kept
    assert len(list((run / ".hydra").glob("resumed_*/overrides.yaml"))) == 1


@pytest.mark.slow
def test_interrupted_run_moved_elsewhere_resumes_to_the_same_metrics(tiny_data, tmp_path, uninterrupted):
    for d in ("a", "b", "elsewhere"):
        (tmp_path / d).mkdir()
    run = tmp_path / "b" / "run1"
    shutil.move(interrupt(tmp_path / "a", tiny_data, signal.SIGINT), run)
    resumed_as_uninterrupted(run, uninterrupted, run_train(tmp_path / "elsewhere", f"resume={run}"))
    assert not (tmp_path / "a" / "run").exists()  # nothing written where the run used to be


@pytest.mark.slow
def test_a_resumed_copy_leaves_every_file_of_the_original_as_it_was(tiny_data, tmp_path, uninterrupted):
    original = interrupt(tmp_path, tiny_data, signal.SIGTERM)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy, symlinks=True)  # as `cp -a` or `rsync -a` copy it

    def files(root):
        return {
            p.relative_to(root): os.readlink(p) if p.is_symlink() else p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() or p.is_symlink()
        }

    before = files(original)
    resumed_as_uninterrupted(copy, uninterrupted, run_train(tmp_path, f"resume={copy}"))
    assert files(original) == before


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_failing_sweep_job_leaves_the_others_and_is_summarised(tiny_data, tmp_path, launcher):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            f"hydra/launcher={launcher}",
            "data=kaggle",
            "trainer.max_epochs=1",
            f"data.dir={tmp_path}/nowhere,{tiny_data}",
            "+trainer.limit_train_batches=1",
            "trainer.enable_progress_bar=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()  # every job in one sweep directory
    assert {p.name for p in sweep.iterdir()} == {"0_all", "1_all", "multirun.yaml"}
    assert metrics(sweep / "1_all")["epochs"] == 1
    summary = proc.stderr[proc.stderr.index("1 of 2 jobs failed") :]
    header = summary.splitlines()[1]
    assert header.startswith("  job 0: ") and f" data.dir={tmp_path}/nowhere " in header
    assert f"error: {tmp_path}/nowhere/training.csv: file not found" in summary
    assert "Traceback" in (sweep / "0_all" / "error.txt").read_text()


@pytest.mark.slow
def test_runs_and_sweeps_started_together_get_their_own_directories(tiny_data, tmp_path):
    args = [
        "data=kaggle",
        f"data.dir={tiny_data}",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "trainer.enable_progress_bar=false",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *extra, *args],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for extra in ([], [], ["-m"], ["-m"])
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(runs) == len(sweeps) == 2
    assert all((run / "metrics.json").is_file() for run in runs)
    assert all((sweep / "0_all" / "metrics.json").is_file() for sweep in sweeps)


def test_cache_is_rebuilt_when_the_source_changes_or_the_cache_is_damaged(tmp_path):
    source = tmp_path / "training.csv"
    rows = [("40.0", " ".join(["7"] * 9216)), ("50.0", " ".join(["9"] * 9216))]
    source.write_text("nose_tip_x,Image\n" + "".join(f"{x},{img}\n" for x, img in rows))
    cache = tmp_path / "cache"
    frame, _ = read_csv(source, cache, 96)
    assert list(frame["nose_tip_x"]) == [40.0, 50.0]

    source.write_text(source.read_text().replace("50.0,", "60.0,"))
    frame, images = read_csv(source, cache, 96)
    assert list(frame["nose_tip_x"]) == [40.0, 60.0]
    current = max(cache.glob("*.npz"), key=os.path.getmtime)
    intact = current.read_bytes()
    for damaged in (intact[: len(intact) // 2], b"\x00" * 100, b"PK\x03\x04 not really a zip"):
        current.write_bytes(damaged)
        frame, again = read_csv(source, cache, 96)
        assert list(frame["nose_tip_x"]) == [40.0, 60.0]
        np.testing.assert_array_equal(again, images)
        assert current.read_bytes() != damaged  # rewritten, not left to fail again


def test_submitits_verdict_on_a_slurm_job_is_found_inside_a_librarys_error(monkeypatch):
    # submitit's signal handler raises it wherever the job is; Lightning's logger wraps it in a ValueError
    from submitit.core.utils import UncompletedJobError

    def wrapped():
        try:
            raise UncompletedJobError("Job not requeued because: timed-out too many times.")
        except UncompletedJobError as e:
            raise ValueError("\n you tried to log nan") from e

    with pytest.raises(ValueError) as caught:
        wrapped()
    assert slurm_verdict(caught.value) is caught.value  # outside a Slurm job, errors are as raised
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert str(slurm_verdict(caught.value)) == "Job not requeued because: timed-out too many times."
    other = RuntimeError("boom")
    assert slurm_verdict(other) is other
