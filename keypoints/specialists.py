"""Specialists pretrained from the base net: weight transfer, GPU placement, the one-command pipeline.

The tutorial trains the base net on all the keypoints, then six specialists whose layers start from
the base net's weights (all but the output layer, whose size follows the specialist's columns).

    python -m keypoints.specialists experiment=specialists data=kaggle data.dir=DIR [overrides]

trains `specialist=all` into <sweep>/all, then the specialists of `hydra.sweeper.params.specialist`
(the preset's six; without one, every specialist of the keypoint set) through Hydra multirun with
`init_from=<sweep>/all` (add `hydra/launcher=local` to run them in parallel processes, `hydra/launcher=slurm`
to run the base net and each specialist as a Slurm job, or `packed=true` to train them together in one
process: keypoints/packed.py), then writes
<sweep>/curves.png and, when the data has a test.csv, <sweep>/submission.csv.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from keypoints import keypointset
from keypoints.data import DataError, find_file
from keypoints.nets import output_layer
from keypoints.runs import checkpoint_path, net_weights

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def init_from(net: nn.Module, path: str | Path) -> list[str]:
    """Copy into `net` every tensor of the checkpoint's net whose name and shape match; return their names.

    The rest keep their fresh initialisation: the output layer, when the columns differ.
    """
    source, target = net_weights(path), net.state_dict()
    copied = [k for k, v in target.items() if k in source and source[k].shape == v.shape]
    head = output_layer(net)
    if not [k for k in copied if not k.startswith(f"{head}.")]:
        raise DataError(f"init_from={path}: no weight matches this net's layers besides the output layer; "
                        f"expected a checkpoint of the same net architecture (net=..., net.hidden=...)")
    with torch.no_grad():
        for k in copied:
            target[k].copy_(source[k])
    fresh = [k for k in target if k not in copied]
    log.info("init_from %s: copied %d of %d tensors; fresh: %s", checkpoint_path(path), len(copied),
             len(target), ", ".join(fresh) or "none")
    return copied


def spread_over_gpus(cfg) -> None:
    """In a multirun with trainer=gpu and one device per job, job n takes GPU n mod the GPU count."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if cfg.trainer.accelerator != "gpu" or cfg.trainer.devices != 1 or not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN and torch.cuda.device_count() > 1:
        cfg.trainer.devices = [hydra.job.num % torch.cuda.device_count()]


def compose(overrides: list[str]):
    """The config (with its `hydra` node) that `python train.py OVERRIDES` would run."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("config", overrides=overrides, return_hydra_config=True)


def train(*args: str, packed: bool = False) -> None:
    """`python train.py ARGS`, or `python -m keypoints.packed ARGS` (the jobs of `train.py -m ARGS`
    trained together); a failure stops the pipeline with its exit status."""
    command = [sys.executable, *(["-m", "keypoints.packed"] if packed else [str(ROOT / "train.py")]), *args]
    log.info("running %s", " ".join(command))
    child = subprocess.Popen(command)
    while child.returncode is None:
        try:
            child.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the child too: it stops by itself, its checkpoints written
            pass
    if child.returncode:
        raise SystemExit(child.returncode)


def pipeline(overrides: list[str]) -> Path:
    """Train the base net, then the specialists initialised from it, all in one sweep directory."""
    from keypoints import plots, runs, submit

    cfg = compose(overrides)
    if cfg.packed:
        one_process(cfg)
    swept = []
    if "specialist" not in (cfg.hydra.sweeper.params or {}):  # the preset names none: every one of the set
        keypoint_set = keypointset.of(cfg)
        if not keypoint_set.specialists:
            raise DataError(f"{keypoint_set.source}: no specialists to train after the base net; name some under "
                            f"`specialists`")
        swept = ["specialist=" + ",".join(keypoint_set.specialists)]
    sweep = Path(cfg.hydra.sweep.dir)
    base = sweep / "all"
    # The base net is a multirun of one job, so that it runs where the specialists do (on Slurm: a job too);
    # packing is for the specialists, not the single base run.
    base_overrides = [o for o in overrides if o.lstrip("+~").split("=")[0] != "packed"]
    train("-m", *base_overrides, "specialist=all", "init_from=null", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=all")
    jobs = [*overrides, *swept, f"init_from={base}", f"hydra.sweep.dir={sweep}"]
    if cfg.packed:  # the specialists trained together, in one process
        train(*jobs, packed=True)
    else:
        train("-m", *jobs)
    print(f"learning curves: {plots.learning_curves(sweep)}")
    try:
        find_file(cfg.data.dir, "test.csv")
    except DataError:
        pass  # training data alone: nothing to submit
    else:
        model, found = runs.load([sweep])
        print(f"submission: {submit.write_submission(model, found, cfg.data.dir, sweep / 'submission.csv')}")
    print(f"runs: tensorboard --logdir {sweep}")
    return sweep


def one_process(cfg) -> None:
    """Packed specialists train in one process: a launcher of several processes is refused."""
    if not cfg.hydra.launcher._target_.endswith(".BasicLauncher"):
        raise DataError(f"packed=true trains the specialists together in one process; drop "
                        f"hydra/launcher={cfg.hydra.runtime.choices['hydra/launcher']}, or set packed=false")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return
    try:
        pipeline(argv)
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
