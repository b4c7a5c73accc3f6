"""Training throughput, side by side in one script run: kfkd vs a minimal hand-written PyTorch loop.

Three loops train the same net on the same tensors with the same batch size and optimizer:
- kfkd: the Trainer `train.py` builds (callbacks, checkpoints, logger, progress bar, precision);
- hand: a minimal loop with the same precision and memory format, validating every epoch too;
- tutorial: the same minimal loop in fp32 with contiguous tensors, as the 2014 tutorial ran.
Each is timed over whole epochs after a warm-up epoch (validation and, for kfkd, checkpoints and the
end of fit included) and run `--repeats` times interleaved; the medians and their ratios are
printed, with the fraction of the measured matmul peak (bf16 or fp32, as the run trains) each
achieves. All share the process, and so the memory allocator settings train.py makes
(`keep_freed_memory`); on a CPU the tutorial's loop is also timed in a fresh process with glibc's
default allocator, as plain PyTorch runs it.

With `--device cuda` (trainer=gpu) the data sits on the GPU, and two loops join: kfkd without its
CUDA graphs (`cuda_graphs=false`), and the hand loop with its whole step (forward, backward,
optimizer) recorded in one CUDA graph and replayed. `--json FILE` writes every figure.

    python -m benchmarks.throughput experiment=net2 data.dir=DATA/realfaces
    python -m benchmarks.throughput --device cuda --json net2.json experiment=net2 data.dir=DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from keypoints.core import keypointset
from keypoints.training.fit import build
from keypoints.training.hardware import keep_freed_memory
from keypoints.training.module import masked_mse

CONF = Path(__file__).resolve().parents[1] / "conf"


class EpochTimer(pl.Callback):
    """When the second epoch starts."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.start = time.perf_counter()


def kfkd(cfg, epochs: int) -> float:
    """Images/s of kfkd's own Trainer, as `python train.py` runs it."""
    with tempfile.TemporaryDirectory() as out:
        cfg = OmegaConf.merge(
            cfg,
            keypointset.specialist(cfg).overrides,
            {"paths": {"output_dir": out}, "trainer": {"max_epochs": epochs}},
        )
        pl.seed_everything(cfg.seed)
        datamodule, module, trainer = build(cfg)
        timer = EpochTimer()
        trainer.callbacks.append(timer)
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            trainer.fit(module, datamodule=datamodule)  # the progress bar still renders, unseen
        return len(datamodule.train_set) * (epochs - 1) / (time.perf_counter() - timer.start)


def hand(cfg, train, valid, epochs: int, bf16: bool, channels_last: bool, graph: bool = False) -> float:
    """Images/s of a minimal loop: shuffle, slice, step; then validate, every epoch. With `graph` (CUDA),
    each full batch's whole step (forward, backward, optimizer) replays one recorded CUDA graph."""
    torch.manual_seed(cfg.seed)
    device = train[0].device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = instantiate(cfg.net, n_outputs=train[1].shape[1]).to(device, memory_format=fmt)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    augment = list(instantiate(cfg.augment).values())
    batch = cfg.data.batch_size
    # cache_enabled=False: a graph cannot be recorded while autocast caches casts
    autocast = lambda: torch.autocast(device.type, torch.bfloat16, enabled=bf16, cache_enabled=not graph)

    def step(x, y, mask):
        for transform in augment:
            x, y, mask = transform(x, y, mask)
        with autocast():
            loss = masked_mse(net(x.contiguous(memory_format=fmt)), y, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    if graph:
        replay, static = record(step, optimizer, [t[:batch].clone() for t in train])
    for epoch in range(epochs):
        if epoch == 1:
            start = time.perf_counter()
        net.train()
        for idx in torch.randperm(len(train[0]), device=device).split(batch):
            if graph and len(idx) == batch:
                for s, t in zip(static, train):
                    torch.index_select(t, 0, idx, out=s)
                replay()
            else:
                step(*(t[idx] for t in train))
        net.eval()
        with torch.no_grad(), autocast():
            sse = sum(
                masked_mse(net(x.contiguous(memory_format=fmt)), y, m) * m.sum()
                for x, y, m in zip(*(t.split(batch) for t in valid))
            )
        float(sse)
    return len(train[0]) * (epochs - 1) / (time.perf_counter() - start)


def record(step, optimizer, static: list[torch.Tensor]):
    """`step` on the batch `static` recorded as one CUDA graph, as torch's documentation records a
    whole network: warmed up on a side stream, then captured; returns its replay and its inputs."""
    if "capturable" in optimizer.defaults:  # Adam(W) keeps its step count on the GPU, as a graph needs
        for group in optimizer.param_groups:
            group["capturable"] = True
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(*static)
    return graph.replay, static


def train_flops_per_image(cfg, n_outputs: int) -> float:
    """Forward + backward FLOPs of one image, counted by torch on a batch."""
    net = instantiate(cfg.net, n_outputs=n_outputs)
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(8, 1, cfg.data.size, cfg.data.size)).sum().backward()
    return counter.get_total_flops() / 8


def matmul_peak(dtype: torch.dtype, device: str = "cpu", repeats: int = 5, n: int | None = None) -> float:
    """FLOP/s of the best of `repeats` n x n matmuls on random data (n = 4096 on a CPU, 8192 on a GPU)."""
    n = n or (8192 if device == "cuda" else 4096)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = min(_timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn, device: str = "cpu") -> float:
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10, help="per run; the first is a warm-up")
    parser.add_argument(
        "--loop", choices=["kfkd", "hand", "tutorial"], help="time this loop alone, once, and print its img/s"
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: trainer=gpu, data on the GPU, and the CUDA graph loops beside",
    )
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument(
        "--peak-size", type=int, help="n of the n x n matmuls that measure the peak (default 4096 on CPU, 8192 on GPU)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("error: --device cuda: torch sees no CUDA device")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(
            "config",
            overrides=["data=kaggle", "paths.output_dir=unused", *(["trainer=gpu"] if cuda else []), *args.overrides],
        )
    if cfg.keep_freed_memory:
        keep_freed_memory()
    datamodule = instantiate(cfg.data, columns=keypointset.specialist(cfg).columns)
    datamodule.setup()
    train, valid = ([t.to(args.device) for t in s.tensors] for s in (datamodule.train_set, datamodule.valid_set))
    bf16 = cfg.trainer.precision == "bf16-mixed"
    device = torch.cuda.get_device_name() if cuda else f"cpu, {torch.get_num_threads()} threads"
    print(
        f"net {cfg.net._target_} {list(cfg.net.channels) if 'channels' in cfg.net else ''}, "
        f"{len(train[0])} train / {len(valid[0])} valid images, batch {cfg.data.batch_size}, "
        f"precision {cfg.trainer.precision}, channels_last {cfg.channels_last}, "
        f"keep_freed_memory {cfg.keep_freed_memory}, cuda_graphs {cfg.cuda_graphs}, "
        f"{device}, {args.epochs} epochs x {args.repeats} repeats"
    )
    loops = {
        "kfkd": lambda: kfkd(cfg, args.epochs),
        "hand": lambda: hand(cfg, train, valid, args.epochs, bf16, cfg.channels_last),
        "tutorial": lambda: hand(cfg, train, valid, args.epochs, False, False),
    }
    if args.loop:
        print(loops[args.loop]())
        return
    if cuda:
        without = OmegaConf.merge(cfg, {"cuda_graphs": not cfg.cuda_graphs})
        loops[f"kfkd, cuda_graphs={not cfg.cuda_graphs}"] = lambda: kfkd(without, args.epochs)
        loops["hand, one graph"] = lambda: hand(cfg, train, valid, args.epochs, bf16, cfg.channels_last, graph=True)
    elif cfg.keep_freed_memory:  # the tutorial's loop as plain PyTorch runs it: a process with glibc's defaults
        loops["tutorial, glibc malloc"] = lambda: float(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.throughput",
                    "--loop",
                    "tutorial",
                    "--epochs",
                    str(args.epochs),
                    *args.overrides,
                    "keep_freed_memory=false",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
        )
    flops = train_flops_per_image(cfg, train[1].shape[1])
    peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32, args.device, n=args.peak_size)
    kind = "bf16" if bf16 else "fp32"
    runs, failed = {name: [] for name in loops}, {}
    for r in range(args.repeats):
        for name, loop in loops.items():
            if name in failed:
                continue
            try:
                runs[name].append(loop())
            except Exception as error:  # noqa: BLE001 - one loop's failure (a graph that cannot be recorded) ends only it
                failed[name] = (
                    f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
                )
                print(f"  repeat {r}: {name:22s} failed: {failed[name]}", flush=True)
                continue
            print(f"  repeat {r}: {name:22s} {runs[name][-1]:7.1f} img/s", flush=True)
        median = {name: statistics.median(v) for name, v in runs.items() if v and name not in failed}
        if args.json:  # after every repeat: a run stopped early still leaves its figures
            Path(args.json).write_text(
                json.dumps(
                    {
                        "device": device,
                        "overrides": args.overrides,
                        "net": cfg.net._target_,
                        "precision": str(cfg.trainer.precision),
                        "batch_size": cfg.data.batch_size,
                        "n_train": len(train[0]),
                        "epochs": args.epochs,
                        "repeats": r + 1,
                        "gflop_per_image": flops / 1e9,
                        "peak_gflop_per_s": peak / 1e9,
                        "img_per_s": runs,
                        "median_img_per_s": median,
                        "failed": failed,
                        "fraction_of_peak": {name: value * flops / peak for name, value in median.items()},
                    },
                    indent=2,
                )
            )
    print(f"\n| loop | img/s (median of {args.repeats}) | kfkd / loop | of the {kind} peak |")
    print("| --- | --- | --- | --- |")
    for name, value in median.items():
        ratio = f"{median['kfkd'] / value:.2f}x" if "kfkd" in median else "–"
        print(f"| {name} | {value:.1f} | {ratio} | {value * flops / peak:.2%} |")
    for name, error in failed.items():
        print(f"| {name} | failed: {error} | – | – |")
    print(f"\nnet: {flops / 1e9:.3f} GFLOP per image (forward + backward); {kind} matmul peak {peak / 1e9:.0f} GFLOP/s")
    if failed:
        sys.exit(f"error: {len(failed)} of {len(loops)} loops failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
