"""Checkpoint write time, side by side in one run: Lightning's TorchCheckpointIO against kfkd's atomic
writer (temporary file in the same folder, fsync, rename), on the checkpoint of a net as
ModelCheckpoint saves it (weights and SGD momentum), in outputs/, on the disk runs write to.

    python -m benchmarks.checkpoint_write experiment=net2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from pytorch_lightning.plugins.io import TorchCheckpointIO

from keypoints.core import keypointset
from keypoints.training.checkpoints import write_atomically

CONF = Path(__file__).resolve().parents[1] / "conf"


def checkpoint(cfg) -> dict:
    """The net's weights and its optimizer's state after one step (the momentum buffers filled)."""
    net = instantiate(cfg.net, n_outputs=len(keypointset.specialist(cfg).columns))
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    net(torch.rand(2, 1, cfg.data.size, cfg.data.size)).sum().backward()
    optimizer.step()
    return {"state_dict": net.state_dict(), "optimizer_states": [optimizer.state_dict()]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    args = parser.parse_args()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=["paths.output_dir=unused", *args.overrides])
    state = checkpoint(cfg)
    writers = {
        "Lightning's TorchCheckpointIO": TorchCheckpointIO().save_checkpoint,
        "kfkd write_atomically": write_atomically,
    }
    times = {name: [] for name in writers}
    Path("outputs").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir="outputs") as out:
        path = Path(out) / "best.ckpt"
        for _ in range(args.repeats):
            for name, write in writers.items():
                start = time.perf_counter()
                write(state, path)
                times[name].append(time.perf_counter() - start)
        size = path.stat().st_size
    print(f"checkpoint of {cfg.net._target_}: {size / 2**20:.1f} MiB, {args.repeats} interleaved writes each")
    print("\n| writer | median s | min s | max s |\n| --- | --- | --- | --- |")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.3f} | {min(t):.3f} | {max(t):.3f} |")


if __name__ == "__main__":
    main()
