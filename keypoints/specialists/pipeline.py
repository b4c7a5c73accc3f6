"""The specialists pipeline: the base net, then the specialists pretrained from it, in one command.

The tutorial trains the base net on all the keypoints, then six specialists whose layers start from
the base net's weights (all but the output layer, whose size follows the specialist's columns).

    kfkd specialists experiment=specialists data=kaggle data.dir=DIR [overrides]

trains `specialist=all` into <sweep>/all, then the specialists of `hydra.sweeper.params.specialist`
(the preset's six; without one, every specialist of the keypoint set) through Hydra multirun with
`init_from=<sweep>/all` (add `hydra/launcher=local` to run them in parallel processes, `hydra/launcher=slurm`
to run the base net and each specialist as a Slurm job, or `packed=true` to train them together in one
process: keypoints/specialists/packed.py), then writes
<sweep>/curves.png and, when the data has a test.csv, <sweep>/submission.csv.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from keypoints.core import keypointset
from keypoints.core.errors import DataError
from keypoints.core.paths import CONF, TRAIN
from keypoints.data.checks import find_file

log = logging.getLogger(__name__)


def compose(overrides: list[str]):
    """The config (with its `hydra` node) that `python train.py OVERRIDES` would run."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=overrides, return_hydra_config=True)


def train(*args: str, packed: bool = False) -> int:
    """`python train.py ARGS`, or `python -m keypoints.specialists.packed ARGS` (the jobs of `train.py -m ARGS`
    trained together); its exit status."""
    command = [sys.executable, *(["-m", "keypoints.specialists.packed"] if packed else [str(TRAIN)]), *args]
    log.info("running %s", " ".join(command))
    child = subprocess.Popen(command)
    while child.returncode is None:
        try:
            child.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the child too: it stops by itself, its checkpoints written
            pass
    return child.returncode


def pipeline(overrides: list[str]) -> Path:
    """Train the base net, then the specialists initialised from it, all in one sweep directory."""
    from keypoints.inference import runs, submit
    from keypoints.training import plots

    cfg = compose(overrides)
    if cfg.packed:
        one_process(cfg)
    swept, specialists = [], str((cfg.hydra.sweeper.params or {}).get("specialist", "")).split(",")
    if "specialist" not in (cfg.hydra.sweeper.params or {}):  # the preset names none: every one of the set
        keypoint_set = keypointset.of(cfg)
        if not keypoint_set.specialists:
            raise DataError(
                f"{keypoint_set.source}: no specialists to train after the base net; name some under `specialists`"
            )
        specialists = list(keypoint_set.specialists)
        swept = ["specialist=" + ",".join(specialists)]
    sweep = Path(cfg.hydra.sweep.dir)
    base = sweep / "all"
    # The base net is a multirun of one job, so that it runs where the specialists do (on Slurm: a job too);
    # packing is for the specialists, not the single base run.
    base_overrides = [o for o in overrides if o.lstrip("+~").split("=")[0] != "packed"]
    status = train(
        "-m", *base_overrides, "specialist=all", "init_from=null", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=all"
    )
    if status:  # the base net failed: nothing to start the specialists from
        raise SystemExit(status)
    jobs = [*overrides, *swept, f"init_from={base}", f"hydra.sweep.dir={sweep}"]
    # A failed specialist does not cost the others' work: the curves and the submission are written
    # from the runs that finished, and the pipeline then exits with the specialists' status.
    status = train(*jobs, packed=True) if cfg.packed else train("-m", *jobs)
    print(f"learning curves: {plots.learning_curves(sweep)}")
    try:
        find_file(cfg.data.dir, "test.csv")
    except DataError:
        pass  # training data alone: nothing to submit
    else:
        model, found = runs.load([sweep])
        written = submit.write_submission(model, found, cfg.data.dir, sweep / "submission.csv")
        failed = [name for name in specialists if name not in {r.cfg.specialist for r in found}]
        print(
            f"submission: {written}"
            + (f" (the base net's columns stand in for {', '.join(failed)}, whose run failed)" if failed else "")
        )
    print(f"runs: tensorboard --logdir {sweep}")
    if status:
        raise SystemExit(status)
    return sweep


def one_process(cfg) -> None:
    """Packed specialists train in one process: a launcher of several processes is refused."""
    if not cfg.hydra.launcher._target_.endswith(".BasicLauncher"):
        raise DataError(
            f"packed=true trains the specialists together in one process; drop "
            f"hydra/launcher={cfg.hydra.runtime.choices['hydra/launcher']}, or set packed=false"
        )


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
