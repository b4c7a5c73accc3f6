"""On a GPU (marked `cuda`, skipped where torch sees none): every preset trains with trainer=gpu in
bf16-mixed, its tensors on the device, no batch copied from the host per step and its step replayed as
a CUDA graph, which trains as the plain step does; the specialists one by one, six at once and packed; DDP
on one device; submit; a GPU-trained run exported and detected where CUDA is hidden. What can be checked
without a GPU runs everywhere: the presets' configs, the bf16 choice, the copy counter, the graphs'
bookkeeping. benchmarks/gpu/run.sh runs this file first on a GPU machine."""

import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from conftest import ROOT, TINY_HEATMAP, compose, run_train
from torch import nn

from keypoints.cli import main as kfkd
from keypoints.core import keypointset
from keypoints.training.cuda_graphs import StepGraphs
from keypoints.training.fit import build, fit

PRESETS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
PHOTOS = [ROOT / ".data" / "photos", ROOT.parent / "shared" / "data" / "photos"]  # .data/: copied for a GPU machine
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none")


# --- the copy counter -------------------------------------------------------------------------------


def host_to_device_bytes(events: list[dict]) -> list[float]:
    """The size of each host-to-device copy among a profiler trace's events (inf where it gives none)."""
    return [
        float(e.get("args", {}).get("bytes", math.inf))
        for e in events
        if "memcpy" in e.get("cat", "").lower() and "htod" in e.get("name", "").lower().replace(" ", "")
    ]


class Profiled:
    """torch's profiler (CPU and CUDA activity) around a block; `.copies`: the host-to-device copies' bytes."""

    def __enter__(self):
        self.profiler = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        )
        self.profiler.__enter__()
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.profiler.__exit__(*exc)
        with tempfile.TemporaryDirectory() as tmp:
            self.profiler.export_chrome_trace(f"{tmp}/trace.json")
            with open(f"{tmp}/trace.json") as f:
                self.copies = host_to_device_bytes(json.load(f)["traceEvents"])


class WhereItTrains(pl.Callback):
    """Each training batch's devices, and the host-to-device copies of three steps in the middle of the
    first epoch (after the step's graph is recorded)."""

    def __init__(self, first_step: int = 2, steps: int = 3):
        self.first, self.steps, self.devices, self.copies, self.window = first_step, steps, set(), None, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.devices |= {t.device.type for t in batch}
        if trainer.global_step == self.first and self.window is None:
            self.window = Profiled().__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.first + self.steps and self.copies is None:
            self.window.__exit__(None, None, None)
            self.copies = self.window.copies


def test_the_copy_counter_counts_host_to_device_copies_and_their_bytes():
    events = [
        {"cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "args": {"bytes": 128}},
        {"cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pinned)", "args": {"bytes": 4}},
        {"cat": "gpu_memcpy", "name": "Memcpy DtoD (Device -> Device)", "args": {"bytes": 4096}},
        {"cat": "kernel", "name": "void at::native::index_kernel<...>", "args": {}},
        {"cat": "cuda_runtime", "name": "cudaMemcpyAsync", "args": {}},
        {"cat": "gpu_memcpy", "name": "Memcpy HtoD (Pinned -> Device)", "args": {}},
    ]
    assert host_to_device_bytes(events) == [128.0, math.inf]  # a copy of unknown size counts as too large


# --- configs and the graphs' bookkeeping, without a GPU -----------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_for_one_gpu_with_graphs(preset):
    cfg = compose(f"experiment={preset}", "trainer=gpu")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == 1 and cfg.cuda_graphs is True


def test_a_gpu_with_bf16_trains_in_bf16_mixed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))  # H100/H200
    assert compose("trainer=gpu").trainer.precision == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))  # T4: no native bf16
    assert compose("trainer=gpu").trainer.precision == "32"


class Loss(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, y, mask):
        return ((self.net(x) - y) ** 2 * mask).mean()


def fake_capture(calls):
    """make_graphed_callables' bookkeeping without CUDA: it runs the loss a few times (its warm-up)
    and hands back the callable."""

    def capture(loss, sample_args, **kwargs):
        calls.append(tuple(sample_args[0].shape))
        for _ in range(3):
            loss(*sample_args)
        return loss

    return capture


def batch(n):
    return torch.rand(n, 4), torch.rand(n, 2), torch.ones(n, 2)


def test_the_step_is_recorded_once_per_batch_shape_and_batch_norm_is_put_back():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    reference = copy.deepcopy(net)
    calls = []
    graphs = StepGraphs(lambda: Loss(net), True, capture=fake_capture(calls))
    graphs.device_type = "cpu"
    x, y, mask = batch(16)
    # The capture's warm-up ran the net three times more: its batch-norm statistics are put back, so
    # they are as one plain step leaves them, and so is the loss.
    assert torch.equal(graphs(x, y, mask), Loss(reference)(x, y, mask))
    assert all(torch.equal(a, b) for a, b in zip(net.buffers(), reference.buffers()))
    graphs(*batch(16))
    graphs(*batch(5))  # an epoch's last, smaller batch: a graph of its own
    graphs(*batch(16))
    assert calls == [(16, 4), (5, 4)] and graphs.recorded == 2


def test_a_step_that_cannot_be_recorded_trains_eagerly_from_then_on(caplog):
    net = nn.Linear(4, 2)
    calls = []

    def failing(loss, sample_args, **kwargs):
        calls.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    graphs = StepGraphs(lambda: Loss(net), True, capture=failing)
    graphs.device_type = "cpu"
    x, y, mask = batch(8)
    assert torch.equal(graphs(x, y, mask), Loss(net)(x, y, mask))
    graphs(*batch(8))
    assert calls == [1] and not graphs.enabled and graphs.recorded == 0
    assert "could not be recorded as a CUDA graph (RuntimeError: operation not permitted" in caplog.text


def test_on_cpu_the_step_is_the_plain_one_whatever_the_option(tiny_data, tmp_path):
    histories = []
    for graphs in (True, False):
        cfg = compose(
            "data=kaggle",
            f"data.dir={tiny_data}",
            "experiment=fast",
            *TINY_HEATMAP,
            "trainer.max_epochs=2",
            "trainer.precision=32",
            f"cuda_graphs={graphs}",
            "trainer.enable_progress_bar=false",
            f"paths.output_dir={tmp_path}/{graphs}",
            f"paths.cache_dir={tmp_path}/cache",
        )
        histories.append(fit(cfg)["history"])
    assert histories[0] == histories[1]


# --- on the GPU -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_data(tmp_path_factory):
    """Synthetic faces, enough for several steps of 16 for every preset (a third fully labelled)."""
    from keypoints.data import synthetic

    return synthetic.generate(tmp_path_factory.mktemp("gpu"), n_train=400, n_test=12, seed=1)


def gpu_overrides(data, out, *more):
    return (
        "data=kaggle",
        f"data.dir={data}",
        "data.batch_size=16",
        "trainer=gpu",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={out}",
        f"paths.cache_dir={out}/../cache",
        *more,
    )


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_on_the_gpu_in_bf16_from_device_memory_through_a_graph(preset, gpu_data, tmp_path):
    cfg = compose(f"experiment={preset}", *gpu_overrides(gpu_data, tmp_path / "run"))
    pl.seed_everything(0)
    datamodule, module, trainer = build(cfg)
    probe = WhereItTrains()
    trainer.callbacks.append(probe)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.precision == "bf16-mixed"
    assert probe.devices == {"cuda"} and all(t.is_cuda for t in datamodule.train_set.tensors)
    assert next(module.net.parameters()).is_cuda
    assert module.training_loss.enabled and module.training_loss.recorded >= 1  # no fallback to eager steps
    # No batch comes from the host: every host-to-device copy of three steps is smaller than one
    # batch's targets (what is left: the DataLoader's row indices).
    one_batch = 16 * len(keypointset.specialist(cfg).columns) * 4
    assert probe.copies is not None, "the profiled steps did not run"
    assert max(probe.copies, default=0) < one_batch and sum(probe.copies) / 3 < one_batch, probe.copies


class SyncsPerStep(pl.Callback):
    """torch's warnings for operations that make the host wait for the GPU, during steps 2-4."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 2:
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == 5:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
@needs_gpu
def test_a_training_step_never_makes_the_host_wait_for_the_gpu(gpu_data, tmp_path):
    """The host queues step after step: no .item(), no copy from pageable memory (the batch's row
    indices travel from pinned memory), no synchronisation."""
    cfg = compose("experiment=fast", *gpu_overrides(gpu_data, tmp_path / "run"))
    datamodule, module, trainer = build(cfg)
    trainer.callbacks.append(SyncsPerStep())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=datamodule)
    syncs = [str(w.message) for w in caught if "synchronizing" in str(w.message).lower()]
    assert syncs == [], syncs[:5]


@pytest.mark.cuda
@needs_gpu
def test_the_copy_counter_sees_a_batch_copied_from_the_host():
    torch.zeros(1, device="cuda")
    with Profiled() as window:
        torch.ones(16, 30).to("cuda")
    assert 16 * 30 * 4 in window.copies, window.copies


@pytest.mark.cuda
@needs_gpu
def test_the_graphed_step_trains_as_the_plain_step(gpu_data, tmp_path):
    """Same seed, no random augmentation or dropout: the epochs' losses match (bf16 rounding apart)."""
    histories = []
    for graphs in (True, False):
        cfg = compose(
            "experiment=fast",
            "net=cnn_bn",
            "augment=none",
            "loss=masked",
            *gpu_overrides(gpu_data, tmp_path / str(graphs), f"cuda_graphs={graphs}"),
        )
        histories.append(fit(cfg)["history"])
    for graphed, plain in zip(*histories):
        for key in ("train_loss", "valid_loss"):
            assert graphed[key] == pytest.approx(plain[key], rel=0.03), (key, histories)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=local"], ["packed=true"]], ids=["one_by_one", "six_at_once", "packed"]
)
def test_the_specialists_train_on_the_gpu(launcher, gpu_data, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keypoints",
            "specialists",
            "experiment=specialists",
            "data=kaggle",
            f"data.dir={gpu_data}",
            "trainer=gpu",
            "epoch_budget.scratch=300",
            "epoch_budget.pretrained=300",
            "trainer.enable_progress_bar=false",
            f"hydra.sweep.dir={sweep}",
            f"paths.cache_dir={tmp_path}/cache",
            *launcher,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 7
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["epochs"] == max(1, int(300 / metrics["n_train"])) and math.isfinite(metrics["valid_rmse_px"])
        assert "precision: bf16-mixed" in (run / "config.yaml").read_text()


@pytest.mark.cuda
@needs_gpu
def test_ddp_trains_on_one_gpu(gpu_data, tmp_path):
    run_train(
        tmp_path,
        "data=kaggle",
        f"data.dir={gpu_data}",
        "loss=masked",
        "data.batch_size=16",
        "trainer=ddp",
        "trainer.devices=1",
        "trainer.accelerator=gpu",
        "trainer.max_epochs=2",
    )
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and math.isfinite(metrics["valid_rmse_px"])
    assert "precision: bf16-mixed" in (run / "config.yaml").read_text()


@pytest.fixture(scope="module")
def gpu_run(gpu_data, tmp_path_factory):
    """A run of the fast recipe (a small heatmap net) trained on the GPU."""
    out = tmp_path_factory.mktemp("gpu_run") / "run"
    fit(compose("experiment=fast", *TINY_HEATMAP, *gpu_overrides(gpu_data, out)))
    return out


@pytest.mark.cuda
@needs_gpu
def test_submit_predicts_and_evaluates_a_gpu_run(gpu_run, gpu_data, tmp_path, capsys):
    kfkd(["submit", str(gpu_run), "--out", str(tmp_path / "submission.csv")])
    written = pd.read_csv(tmp_path / "submission.csv")
    assert len(written) == len(pd.read_csv(gpu_data / "IdLookupTable.csv")) and written["Location"].between(0, 96).all()
    capsys.readouterr()
    kfkd(["evaluate", str(gpu_run)])
    overall = float(capsys.readouterr().out.strip().splitlines()[-1].split()[-1])
    # The run validated in bf16-mixed; evaluate predicts in fp32: the same RMSE within rounding.
    assert overall == pytest.approx(json.loads((gpu_run / "metrics.json").read_text())["valid_rmse_px"], rel=0.03)


@pytest.mark.cuda
@needs_gpu
def test_a_gpu_run_is_exported_and_detects_faces_without_cuda(gpu_run, tmp_path):
    photo = next((p for d in PHOTOS for p in sorted(d.glob("*.jpg"))), None)  # a photo of one face
    if photo is None:
        pytest.skip(f"no photo in {[str(d) for d in PHOTOS]} (benchmarks/gpu/prepare.sh copies one)")
    hidden = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    check = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
        env=hidden,
        capture_output=True,
        text=True,
    )
    assert check.stdout.strip() == "False"  # CUDA is hidden indeed
    onnx = tmp_path / "model.onnx"
    for args in (
        ["keypoints", "export", str(gpu_run), "--out", str(onnx)],
        ["keypoints", "detect", str(gpu_run), str(photo), "--out", str(tmp_path / "torch")],
        ["keypoints", "detect", str(onnx), str(photo), "--out", str(tmp_path / "onnx")],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", *args], cwd=ROOT, env=hidden, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    tables = [pd.read_csv(tmp_path / d / "keypoints.csv") for d in ("torch", "onnx")]
    assert len(tables[0]) == len(tables[1]) == 1
    # torch on the CPU and onnxruntime give the same keypoints for the GPU-trained weights
    np.testing.assert_allclose(tables[0].iloc[:, 6:].to_numpy(float), tables[1].iloc[:, 6:].to_numpy(float), atol=0.05)
