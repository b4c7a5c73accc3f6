"""The cost of a training step of several nets, side by side in one process: forward, masked loss,
backward and the optimiser's step on one batch of random faces, in the precision and memory format
train.py would use here. The nets' configs are interleaved over `--repeats` rounds; the medians,
their ratio to the first net, the weights and the multiply-adds per face (forward) are printed.

    python -m benchmarks.nets net=cnn_bn net=resnet "net=heatmap net.width=32"
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from keypoints.core import keypointset
from keypoints.training.hardware import keep_freed_memory
from keypoints.training.module import masked_mse

CONF = Path(__file__).resolve().parents[1] / "conf"


def step_fn(overrides: list[str], batch: int):
    """A function that runs one training step of the configured net; its weights; its MACs per face."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=["experiment=fast", *overrides])
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    n, size = len(keypointset.specialist(cfg).columns), cfg.data.size
    net = instantiate(cfg.net, n_outputs=n).to(memory_format=fmt)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    x = torch.rand(batch, 1, size, size).contiguous(memory_format=fmt)
    y, mask = torch.rand(batch, n) * 2 - 1, torch.ones(batch, n)
    with FlopCounterMode(display=False) as flops:
        net(x[:1])

    def step():
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = masked_mse(net(x), y, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step, sum(p.numel() for p in net.parameters()), flops.get_total_flops() // 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="one quoted set of overrides per net (the first is the reference)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    keep_freed_memory()
    nets = [step_fn(c.split(), args.batch) for c in args.configs]
    times = [[] for _ in nets]
    for _ in range(args.repeats):
        for (step, _, _), t in zip(nets, times):
            step()  # warm-up: the allocator and oneDNN's kernels for this net
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            t.append((time.perf_counter() - start) / args.steps)
    reference = statistics.median(times[0])
    print(
        f"batch {args.batch}, median of {args.repeats} rounds of {args.steps} steps, {torch.get_num_threads()} threads"
    )
    for config, (_, weights, macs), t in zip(args.configs, nets, times):
        ms = statistics.median(t) * 1000
        print(
            f"{config:45s} {ms:8.1f} ms/step  x{ms / reference / 1000:5.2f}  {weights / 1e6:5.2f} M weights  "
            f"{macs / 1e6:6.1f} M MAC/face"
        )


if __name__ == "__main__":
    main()
