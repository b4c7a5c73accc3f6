"""kfkd: facial keypoint detection experiments, one command with a subcommand for each job.

    kfkd COMMAND [ARGS]      (python -m keypoints COMMAND does the same)

`train`, `specialists` and `search` take Hydra overrides of conf/ (`kfkd train net=mlp seed=1`);
the others take their own options. `kfkd COMMAND --help` says more. Each command's module is imported
only when it runs, so `kfkd --help` answers at once.
"""

from __future__ import annotations

import difflib
import importlib
import string
import sys

import hydra
from omegaconf import DictConfig

from keypoints.core import mistakes, searchpath
from keypoints.core.paths import CONF

# name: (module whose main(argv) runs it, one line of help)
COMMANDS = {
    "train": ("keypoints.cli", "train one net, or several with -m: Hydra overrides (as python train.py)"),
    "specialists": ("keypoints.specialists.pipeline", "the base net, then its specialists, then curves and submission"),
    "search": ("keypoints.cli", "an Optuna search that prunes: kfkd train -m hparams_search=fast OVERRIDES"),
    "submit": ("keypoints.inference.submit", "predict Kaggle's test.csv with trained runs: submission.csv"),
    "evaluate": ("keypoints.inference.evaluate", "RMSE and NME of trained runs on labelled faces"),
    "detect": ("keypoints.photos.detect", "keypoints on photos: faces found, framed and predicted"),
    "video": ("keypoints.photos.video", "keypoints on a video, a folder of frames or a camera: tracked and smoothed"),
    "export": ("keypoints.inference.export", "a trained run as an .onnx model that needs no torch"),
    "mirror": ("keypoints.inference.mirror", "measure where a dataset's mirrored labels sit off the mirror"),
    "framefit": ("keypoints.photos.framefit", "fit how a face finder's box frames faces (conf/framing.yaml)"),
    "data": ("keypoints.data.build", "build realfaces (Kaggle CSV) or faces68 (COCO) from their public source"),
}


def train_task() -> None:
    """`python train.py ARGS` (and `kfkd train ARGS`): kfkd's own --help, or Hydra's run of train_run,
    where a mistake on the command line is one line (keypoints.core.mistakes); `-v` is `hydra.verbose=true`."""
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(train_help([a for a in args if not a.startswith("-")]))
        return
    if "-v" in args or "--verbose" in args:  # the libraries' INFO lines too (keypoints.training.quiet)
        sys.argv = [sys.argv[0], *[a for a in args if a not in ("-v", "--verbose")], "hydra.verbose=true"]
    with mistakes.hydra_mistakes_in_one_line():
        train_run()


def train_help(overrides: list[str]) -> str:
    """The help of conf/hydra/help/kfkd.yaml, with each group's options on the search path (those of
    `hydra.searchpath` too), the option a plain run takes first. Hydra's own --help would print every
    setting, and list the groups in a second or more."""
    from hydra import compose, initialize_config_dir

    with mistakes.stopping(), initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        hydra_cfg = compose("config", overrides=overrides, return_hydra_config=True).hydra
    runtime, groups = hydra_cfg.runtime, []
    for group in searchpath.groups(runtime):
        first = runtime.choices.get(group)  # the option a plain run takes
        options = sorted(searchpath.options(runtime, group), key=lambda o: o != first)
        groups.append(f"  {group:<15} {', '.join(options)}")
    return string.Template(hydra_cfg.help.template).substitute(APP_CONFIG_GROUPS="\n".join(groups))


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def train_run(cfg: DictConfig) -> float:
    """One run of `python train.py`: its config, composed by Hydra from conf/ and the command line."""
    # Imported after Hydra has parsed the command line: `--help` stays fast.
    from hydra.core.hydra_config import HydraConfig

    from keypoints.sweeps.cluster import requeued
    from keypoints.training.faults import resume_point, user_errors
    from keypoints.training.fit import fit

    with user_errors():
        if cfg.resume is not None:
            cfg, resume_from = resume_point(cfg, HydraConfig.get())
        else:  # a Slurm job started again goes on where it was preempted
            cfg, resume_from = requeued(cfg)
        metrics = fit(cfg, resume_from)
    nme = metrics["valid_nme_pct"]
    print(
        f"valid RMSE: {metrics['valid_rmse_px']:.3f} px"
        + (f", NME {nme:.2f} %, failure rate {metrics['valid_failure_pct']:.1f} %" if nme is not None else "")
        + f" (best epoch {metrics['best_epoch']}, {metrics['epochs']} epochs, {metrics['wall_time_s']:.0f} s)"
    )
    print(f"logs: tensorboard --logdir {cfg.paths.output_dir}")
    return metrics["valid_rmse_px"]


def hydra_command(name: str, argv: list[str]) -> None:
    """Run train_task on `argv` as Hydra reads a command line: from sys.argv."""
    sys.argv = [f"kfkd {name}", *argv]
    train_task()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        title, usage, rest = __doc__.split("\n\n", 2)
        width = max(map(len, COMMANDS))
        commands = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
        print(f"{title}\n\n{usage}\n\ncommands:\n{commands}\n\n{rest}", end="")
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        near = difflib.get_close_matches(name, COMMANDS, n=1)
        sys.exit(
            f"error: kfkd {name}: no such command; "
            + (f"did you mean kfkd {near[0]}?" if near else f"expected one of {', '.join(COMMANDS)}")
        )
    if name == "train":
        hydra_command(name, rest)
    elif name == "search":
        preset = [] if any(a.split("=")[0].lstrip("+") == "hparams_search" for a in rest) else ["hparams_search=fast"]
        hydra_command(name, ["-m", *preset, *[a for a in rest if a not in ("-m", "--multirun")]])
    else:
        importlib.import_module(COMMANDS[name][0]).main(rest)


if __name__ == "__main__":
    main()
