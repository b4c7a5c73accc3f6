"""Packed specialists (keypoints/specialists/packed.py): trained together, one step for all, each as it would be alone."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import KAGGLE15, ROOT, TINY, compose
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from keypoints.cli import main as kfkd
from keypoints.core.errors import DataError
from keypoints.data import images
from keypoints.inference import export, runs
from keypoints.inference import predictor as inference
from keypoints.photos import detect
from keypoints.specialists import packed
from keypoints.specialists import pipeline as specialists
from keypoints.training import plots
from keypoints.training.fit import fit

PHOTOS = ROOT.parent / "shared" / "data" / "photos"
NAMES = ["eyes", "mouth", "nose"]  # 4, 6 and 2 columns
# Under loss=mse each trains on the rows having all its columns (mouth on far fewer), in batches of 8 with a
# short last one, for its own epoch budget (800 rows: 12, 44 and 12 epochs) with the tutorial's SGD and
# linear schedule over it; patience 2 stops them early, at different epochs. fp32, so that losses compare
# at fp32 tolerance.
RECIPE = (
    "data.batch_size=8",
    "loss=mse",
    "optimizer=sgd",
    "schedule=linear",
    "epoch_budget.pretrained=800",
    "callbacks.early_stopping.patience=2",
    "trainer.precision=32",
)
PATIENCE = 2


def common(data, root, *extra):
    return ["data=kaggle", f"data.dir={data}", f"paths.cache_dir={root}/cache", *TINY, *RECIPE, *extra]


@pytest.fixture(
    scope="module",
    ids=["random-augmentations", "batch-norm"],
    params=[
        ("augment=[flip,affine,photometric]",),  # each job draws them from its own stream, as its own run would
        pytest.param(("net.batch_norm=true", "augment=none"), marks=pytest.mark.slow),
    ],
)  # batches of each length together
def trained(request, tmp_path_factory, tiny_data):
    """A base net, the three specialists packed from it, and each of them trained alone from it."""
    root = tmp_path_factory.mktemp("packed")
    settings = common(tiny_data, root, *request.param)
    fit(compose(*settings, "trainer.max_epochs=2", f"paths.output_dir={root}/sweep/all"))
    ended, end, step, steps = {}, packed.Job.end, packed.Pack.step, []

    def watched_end(job, start_time):  # each job's weights as it leaves the step, and the packed steps so far
        metrics = end(job, start_time)
        ended[job.name] = job, {k: v.clone() for k, v in job.module.state_dict().items()}, len(steps)
        return metrics

    def counted_step(pack, jobs, batches):
        steps.append([job.name for job in jobs])
        return step(pack, jobs, batches)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(packed.Job, "end", watched_end)
        patch.setattr(packed.Pack, "step", counted_step)
        together = packed.train(
            [*settings, "specialist=" + ",".join(NAMES), f"init_from={root}/sweep/all", f"hydra.sweep.dir={root}/sweep"]
        )
    alone = {
        name: fit(
            compose(
                *settings, f"specialist={name}", f"init_from={root}/sweep/all", f"paths.output_dir={root}/alone/{name}"
            )
        )
        for name in NAMES
    }
    return root / "sweep", {out.name.split("_", 1)[1]: m for out, m in together.items()}, alone, (ended, steps)


def test_each_packed_specialist_trains_as_it_would_alone(trained):
    sweep, together, alone, _ = trained
    assert sorted(p.name for p in sweep.iterdir()) == ["0_eyes", "1_mouth", "2_nose", "all"]  # the multirun's layout
    for name in NAMES:
        p, a = together[name], alone[name]
        assert (p["epochs"], p["best_epoch"], p["n_train"], p["n_valid"]) == (
            a["epochs"],
            a["best_epoch"],
            a["n_train"],
            a["n_valid"],
        )
        for key in ("train_loss", "valid_loss", "valid_rmse_px"):  # the same batches, in the same order, flipped alike
            assert [h[key] for h in p["history"]] == pytest.approx([h[key] for h in a["history"]], rel=1e-3), (
                name,
                key,
            )
        assert p["valid_rmse_px"] == pytest.approx(a["valid_rmse_px"], rel=1e-3)
    # Each on its own rows and for its own budget: mouth has far fewer rows, so more epochs.
    epochs = {n: OmegaConf.load(next(sweep.glob(f"*_{n}")) / "config.yaml").trainer.max_epochs for n in NAMES}
    assert together["mouth"]["n_train"] < together["eyes"]["n_train"] and epochs["mouth"] > epochs["eyes"]


def test_each_stops_early_on_its_own_and_ends_with_its_best_epochs_weights(trained):
    sweep, together, _, (ended, _) = trained
    for name in NAMES:
        m, run = together[name], next(sweep.glob(f"*_{name}"))
        valid = [h["valid_loss"] for h in m["history"]]
        assert m["epochs"] < OmegaConf.load(run / "config.yaml").trainer.max_epochs  # stopped early...
        assert (
            m["best_epoch"] == valid.index(min(valid)) == m["epochs"] - 1 - PATIENCE
        )  # ...patience epochs after its best
        assert m["valid_loss"] == pytest.approx(valid[m["best_epoch"]], rel=1e-6)  # validated again: the best weights
        checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
        assert checkpoint["epoch"] == m["best_epoch"]
        job, weights, _ = ended[name]  # restored: the weights it ends with are its best epoch's checkpoint
        assert checkpoint["state_dict"].keys() == weights.keys()
        assert all(torch.equal(checkpoint["state_dict"][k], v) for k, v in weights.items()), name
    assert len({together[n]["epochs"] for n in NAMES}) > 1  # and not all at the same epoch


def test_a_stopped_specialist_no_longer_changes_while_the_others_train_on(trained):
    _, together, _, (ended, steps) = trained
    for name in NAMES:
        job, weights, stopped_at = ended[name]
        assert not any(name in stepped for stepped in steps[stopped_at:])  # out of the step...
        # ...and every packed step after it stopped (mouth ran tens of epochs more) left it as it was.
        assert all(torch.equal(v, weights[k]) for k, v in job.module.state_dict().items()), name
        assert job.step == together[name]["epochs"] * len(job.loader)  # its own epochs' steps, not one more
    last = max(ended.values(), key=lambda e: e[2])
    assert all(e[2] < last[2] for e in ended.values() if e is not last)  # the others stopped while it trained on


def test_a_packed_sweep_reads_as_a_multirun_does(trained, capsys):
    sweep, together, _, _ = trained
    assert sorted(r.dir.name for r in runs.find([sweep])) == ["0_eyes", "1_mouth", "2_nose", "all"]
    kfkd(["evaluate", str(sweep)])
    assert "overall" in capsys.readouterr().out
    assert plots.learning_curves(sweep).is_file()
    for name in NAMES:
        run = next(sweep.glob(f"*_{name}"))
        assert f"specialist={name}" in OmegaConf.load(run / ".hydra" / "overrides.yaml")
        events = EventAccumulator(str(run))
        events.Reload()
        for curve in ["train_loss", "valid_loss", "valid_rmse_px"]:  # against the epoch, as train.py's runs
            assert [e.step for e in events.Scalars(curve)] == list(range(together[name]["epochs"]))
        assert {"lr-SGD", "lr-SGD-momentum", "hp/valid_rmse_px"} <= set(
            events.Tags()["scalars"]
        )  # as LearningRateMonitor
        assert events.Images("valid_faces")


def test_in_the_hosts_own_precision_too(tiny_data, tmp_path):
    """bf16-mixed on an AVX-512 BF16 host, fp32 on an AVX2 one: packed and alone in that same precision,
    compared at its own tolerance (bf16's rounding differs between one grouped convolution and six)."""
    settings = [
        *common(tiny_data, tmp_path),
        "trainer.precision=${fastest_precision:cpu}",
        "augment=flip",
        "epoch_budget.pretrained=null",
        "trainer.max_epochs=3",
    ]
    fit(compose(*settings, f"paths.output_dir={tmp_path}/sweep/all"))
    together = packed.train(
        [*settings, "specialist=eyes,nose", f"init_from={tmp_path}/sweep/all", f"hydra.sweep.dir={tmp_path}/sweep"]
    )
    precision = OmegaConf.load(tmp_path / "sweep" / "0_eyes" / "config.yaml").trainer.precision
    rel = 1e-3 if precision == "32" else 2e-2
    for out, p in together.items():
        name = out.name.split("_", 1)[1]
        a = fit(
            compose(
                *settings,
                f"specialist={name}",
                f"init_from={tmp_path}/sweep/all",
                f"paths.output_dir={tmp_path}/alone/{name}",
            )
        )
        assert p["epochs"] == a["epochs"] == 3
        for key in ("train_loss", "valid_loss"):
            assert [h[key] for h in p["history"]] == pytest.approx([h[key] for h in a["history"]], rel=rel), (name, key)


def test_detect_export_and_resume_read_each_packed_run_as_its_own(trained, tmp_path):
    sweep, _, _, _ = trained
    faces = np.random.default_rng(0).random((4, 1, 96, 96), np.float32)
    model = inference.load(sweep, False, 8)  # what detect and export assemble from a sweep
    onnx = inference.load(export.export(sweep, out=tmp_path / "model.onnx"), False, 8)
    np.testing.assert_allclose(onnx(faces), model(faces), atol=1e-3)
    predicted = dict(zip(model.columns, model(faces).T))
    for name in NAMES:  # each specialist's columns come from its own packed run's net
        own = inference.load(next(sweep.glob(f"*_{name}")), False, 8)
        assert set(own.columns) <= set(model.columns)
        for column, values in zip(own.columns, own(faces).T):
            np.testing.assert_allclose(predicted[column], values, atol=1e-5, err_msg=f"{name}: {column}")
    photo = PHOTOS / "Martin_Sheen_01.jpg"
    if photo.is_file():  # the shared photos: absent from a fresh clone
        (face,) = detect.Detector(sweep)(np.asarray(images.read(photo).convert("RGB")))
        assert face.keypoints.shape == (15, 2) and np.isfinite(face.keypoints).all()
    resume = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"resume={next(sweep.glob('*_eyes'))}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resume.returncode == 1 and "this run has finished" in resume.stderr  # as any finished run's


def test_the_pipeline_hands_the_specialists_to_the_packed_command(monkeypatch, tmp_path):
    calls = []

    def train(*args, packed=False):  # record the two commands instead of training
        calls.append((args, packed))
        if len(calls) == 2:
            raise SystemExit(0)

    monkeypatch.setattr(specialists, "train", train)
    with pytest.raises(
        DataError, match="packed=true trains the specialists together in one process; drop hydra/launcher=local"
    ):
        specialists.pipeline(["packed=true", "hydra/launcher=local", f"hydra.sweep.dir={tmp_path}"])
    assert not calls  # refused before the base net trains
    with pytest.raises(SystemExit):
        specialists.pipeline(["experiment=specialists", "packed=true", f"hydra.sweep.dir={tmp_path}"])
    (base, base_packed), (jobs, jobs_packed) = calls
    assert not base_packed and "specialist=all" in base and "packed=true" not in base  # train.py refuses it
    assert jobs_packed and "-m" not in jobs and f"init_from={tmp_path / 'all'}" in jobs


def test_jobs_are_those_of_the_multirun_and_must_share_the_net(tiny_data, tmp_path):
    found = packed.jobs(
        ["experiment=specialists", f"hydra.sweep.dir={tmp_path}", "data=kaggle", f"data.dir={tiny_data}"]
    )
    assert [cfg.paths.output_dir for cfg, _ in found] == [
        str(tmp_path / f"{i}_{n}")
        for i, n in enumerate(["eyes", "nose", "mouth", "mouth_bottom", "eye_corners", "eyebrows"])
    ]
    assert all(cfg.packed for cfg, _ in found) and len({cfg.trainer.max_epochs for cfg, _ in found}) > 1  # own budgets
    with pytest.raises(DataError, match="packed: net of 1_eyes differs from 0_eyes's"):
        packed.jobs(
            [*common(tiny_data, tmp_path), "specialist=eyes", "net.hidden=8,16", f"hydra.sweep.dir={tmp_path}/2"]
        )
    for bad, message in [
        ("trainer=ddp", "in one process on one device"),
        ("trainer.precision=16-mixed", "gradient scaler"),
    ]:
        with pytest.raises(DataError, match=message):
            packed.train(
                [
                    *common(tiny_data, tmp_path),
                    "specialist=eyes,nose",
                    bad,
                    f"init_from={tmp_path}/base",
                    f"hydra.sweep.dir={tmp_path}/3",
                ]
            )
        assert not (tmp_path / "3").exists()  # refused before any run directory is claimed


def test_a_job_stopped_before_its_first_epoch_ended_is_said_to_keep_nothing(tiny_data, tmp_path, monkeypatch, caplog):
    def interrupted(self, active, batches):
        raise KeyboardInterrupt

    monkeypatch.setattr(packed.Pack, "step", interrupted)  # Ctrl-C during the first step
    with pytest.raises(SystemExit) as stop:
        packed.train(
            [
                *common(tiny_data, tmp_path),
                "epoch_budget.pretrained=null",
                "trainer.max_epochs=3",
                "specialist=eyes,nose",
                f"hydra.sweep.dir={tmp_path}/sweep",
            ]
        )
    assert stop.value.code == 130
    assert "eyes: epoch 0 of 3, nothing kept (no epoch ended); nose: epoch 0 of 3, nothing kept" in caplog.text
    assert not list((tmp_path / "sweep").glob("*/checkpoints/*.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c-in-the-pipeline", "sigterm-to-keypoints.specialists.packed"])
def test_interrupted_packed_runs_keep_their_best_weights_and_are_not_resumed(tiny_data, tmp_path, how):
    settings = [
        "experiment=specialists",
        *common(tiny_data, tmp_path),
        "epoch_budget.scratch=100",
        "epoch_budget.pretrained=1e6",
        "callbacks.early_stopping.patience=1000",
    ]
    if how == "ctrl-c-in-the-pipeline":  # the terminal's Ctrl-C reaches the whole process group
        command, stop, status = (
            [
                sys.executable,
                "-m",
                "keypoints",
                "specialists",
                *settings,
                "packed=true",
                f"hydra.sweep.dir={tmp_path}/sweep",
            ],
            lambda p: os.killpg(p.pid, signal.SIGINT),
            130,
        )
    else:
        fit(compose(*settings, f"paths.output_dir={tmp_path}/sweep/all"))
        settings += ["specialist=eyes,nose", f"hydra.sweep.dir={tmp_path}/sweep"]
        command, stop, status = (
            [sys.executable, "-m", "keypoints.specialists.packed", *settings, f"init_from={tmp_path}/sweep/all"],
            lambda p: p.send_signal(signal.SIGTERM),
            143,
        )
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # even where the runner ignores Ctrl-C
    # Stopped once every packed specialist has ended an epoch: before it, one has no weights to keep.
    names = KAGGLE15.specialists if how == "ctrl-c-in-the-pipeline" else ["eyes", "nose"]
    checkpoints = [tmp_path / "sweep" / f"{i}_{n}" / "checkpoints" / "best.ckpt" for i, n in enumerate(names)]
    deadline = time.time() + 120
    while not all(c.is_file() for c in checkpoints) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    stop(proc)
    try:
        out = proc.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running 120 s after the signal; its output:\n{proc.communicate()[0][-3000:]}")
    assert proc.returncode == status, out[-3000:]
    assert "packed training stopped" in out and "Packed runs are not resumed" in out and "Traceback" not in out
    found = runs.find([tmp_path / "sweep"])  # the best weights so far, readable as any run's
    assert {"0_eyes", "1_nose", "all"} <= {r.dir.name for r in found} and all(r.net() for r in found)
    assert not (tmp_path / "sweep" / "0_eyes" / "metrics.json").exists()
    resume = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"resume={tmp_path}/sweep/0_eyes"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resume.returncode == 1 and "trained packed with other specialists" in resume.stderr
