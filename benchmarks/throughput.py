"""Training throughput, side by side in one script run: kfkd vs a minimal hand-written PyTorch loop.

Three loops train the same net on the same tensors with the same batch size and optimizer:
- kfkd: the Trainer `train.py` builds (callbacks, checkpoints, logger, progress bar, precision);
- hand: a minimal loop with the same precision and memory format, validating every epoch too;
- tutorial: the same minimal loop in fp32 with contiguous tensors, as the 2014 tutorial ran.
Each is timed over whole epochs after a warm-up epoch (validation and, for kfkd, checkpoints and the
end of fit included) and run `--repeats` times interleaved; the medians and their ratios are
printed, with the achieved fraction of the measured bf16 matmul peak. All three share the process,
and so the memory allocator settings train.py makes (`keep_freed_memory`); the tutorial's loop is
also timed in a fresh process with glibc's default allocator, as plain PyTorch runs it.

    flock /tmp/kfkd-cpu.lock python -m benchmarks.throughput experiment=net2 data.dir=../shared/data/realfaces
"""
from __future__ import annotations

import argparse
import contextlib
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

from keypoints import keypointset
from keypoints.fit import build
from keypoints.hardware import keep_freed_memory
from keypoints.module import masked_mse

CONF = Path(__file__).resolve().parents[1] / "conf"


class EpochTimer(pl.Callback):
    """When the second epoch starts."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            self.start = time.perf_counter()


def kfkd(cfg, epochs: int) -> float:
    """Images/s of kfkd's own Trainer, as `python train.py` runs it."""
    with tempfile.TemporaryDirectory() as out:
        cfg = OmegaConf.merge(cfg, keypointset.specialist(cfg).overrides, {"paths": {"output_dir": out},
                                                               "trainer": {"max_epochs": epochs}})
        pl.seed_everything(cfg.seed)
        datamodule, module, trainer = build(cfg)
        timer = EpochTimer()
        trainer.callbacks.append(timer)
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            trainer.fit(module, datamodule=datamodule)  # the progress bar still renders, unseen
        return len(datamodule.train_set) * (epochs - 1) / (time.perf_counter() - timer.start)


def hand(cfg, train, valid, epochs: int, bf16: bool, channels_last: bool) -> float:
    """Images/s of a minimal loop: shuffle, slice, step; then validate, every epoch."""
    torch.manual_seed(cfg.seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = instantiate(cfg.net, n_outputs=train[1].shape[1]).to(memory_format=fmt)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    augment = list(instantiate(cfg.augment).values())
    batch = cfg.data.batch_size
    autocast = lambda: torch.autocast("cpu", torch.bfloat16, enabled=bf16)
    for epoch in range(epochs):
        if epoch == 1:
            start = time.perf_counter()
        net.train()
        for idx in torch.randperm(len(train[0])).split(batch):
            x, y, mask = (t[idx] for t in train)
            for transform in augment:
                x, y, mask = transform(x, y, mask)
            with autocast():
                loss = masked_mse(net(x.contiguous(memory_format=fmt)), y, mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad(), autocast():
            sse = sum(masked_mse(net(x.contiguous(memory_format=fmt)), y, m) * m.sum()
                      for x, y, m in zip(*(t.split(batch) for t in valid)))
        float(sse)
    return len(train[0]) * (epochs - 1) / (time.perf_counter() - start)


def train_flops_per_image(cfg, n_outputs: int) -> float:
    """Forward + backward FLOPs of one image, counted by torch on a batch."""
    net = instantiate(cfg.net, n_outputs=n_outputs)
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(8, 1, cfg.data.size, cfg.data.size)).sum().backward()
    return counter.get_total_flops() / 8


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` n x n matmuls."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10, help="per run; the first is a warm-up")
    parser.add_argument("--loop", choices=["kfkd", "hand", "tutorial"],
                        help="time this loop alone, once, and print its img/s")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    args = parser.parse_args()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=["data=kaggle", "paths.output_dir=unused", *args.overrides])
    if cfg.keep_freed_memory:
        keep_freed_memory()
    datamodule = instantiate(cfg.data, columns=keypointset.specialist(cfg).columns)
    datamodule.setup()
    train, valid = datamodule.train_set.tensors, datamodule.valid_set.tensors
    bf16 = cfg.trainer.precision == "bf16-mixed"
    print(f"net {cfg.net._target_} {list(cfg.net.channels) if 'channels' in cfg.net else ''}, "
          f"{len(train[0])} train / {len(valid[0])} valid images, batch {cfg.data.batch_size}, "
          f"precision {cfg.trainer.precision}, channels_last {cfg.channels_last}, "
          f"keep_freed_memory {cfg.keep_freed_memory}, "
          f"{torch.get_num_threads()} threads, {args.epochs} epochs x {args.repeats} repeats")
    loops = {
        "kfkd": lambda: kfkd(cfg, args.epochs),
        "hand": lambda: hand(cfg, train, valid, args.epochs, bf16, cfg.channels_last),
        "tutorial": lambda: hand(cfg, train, valid, args.epochs, False, False),
    }
    if args.loop:
        print(loops[args.loop]())
        return
    if cfg.keep_freed_memory:  # the tutorial's loop as plain PyTorch runs it: a process with glibc's defaults
        loops["tutorial, glibc malloc"] = lambda: float(subprocess.run(
            [sys.executable, "-m", "benchmarks.throughput", "--loop", "tutorial", "--epochs", str(args.epochs),
             *args.overrides, "keep_freed_memory=false"], capture_output=True, text=True, check=True).stdout.split()[-1])
    runs = {name: [] for name in loops}
    for r in range(args.repeats):
        for name, loop in loops.items():
            runs[name].append(loop())
            print(f"  repeat {r}: {name:22s} {runs[name][-1]:7.1f} img/s", flush=True)
    median = {name: statistics.median(v) for name, v in runs.items()}
    flops = train_flops_per_image(cfg, train[1].shape[1])
    peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32)
    print(f"\n| loop | img/s (median of {args.repeats}) | kfkd / loop |")
    print("| --- | --- | --- |")
    for name, value in median.items():
        print(f"| {name} | {value:.1f} | {median['kfkd'] / value:.2f}x |")
    print(f"\nnet: {flops / 1e9:.3f} GFLOP per image (forward + backward); "
          f"{'bf16' if bf16 else 'fp32'} matmul peak {peak / 1e9:.0f} GFLOP/s; "
          f"kfkd achieves {median['kfkd'] * flops / 1e9:.0f} GFLOP/s = {median['kfkd'] * flops / peak:.0%} of peak")


if __name__ == "__main__":
    main()
