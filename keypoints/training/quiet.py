"""Quiet libraries: the deprecation warnings, tips and notes that Lightning and torch print on every run are
filtered where they come from, each by its message and the module or logger that emits it; Lightning's INFO
lines (GPU available, `Trainer.fit` stopped...) show only with `hydra.verbose=true`. Any other warning, a
user's own included, and kfkd's log lines stay as they were."""

from __future__ import annotations

import logging
import warnings

from hydra.core.hydra_config import HydraConfig
from lightning_fabric.utilities.warnings import PossibleUserWarning

# (message, category, module that raises it): regular expressions matched at their start, as warnings does
WARNINGS = (
    # torch deprecated LeafSpec, which Lightning still builds (its utilities/_pytree.py)
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"pytorch_lightning\."),
    # every run outside a Slurm job, on a host with Slurm's client; kfkd's Slurm jobs start through submitit's srun
    (r"The `srun` command is available on your system but is not used", PossibleUserWarning, r"lightning_fabric\."),
    # kfkd logs only per epoch: the per-step interval applies to nothing it logs
    (
        r"The number of training batches \(\d+\) is smaller than the logging interval",
        PossibleUserWarning,
        r"pytorch_lightning\.",
    ),
    # DDP: the epoch that kfkd logs as TensorBoard's x-axis ("step") is the same on every rank
    (
        r"It is recommended to use `self\.log\('step', \.\.\., sync_dist=True\)`",
        PossibleUserWarning,
        r"pytorch_lightning\.",
    ),
    # debug=overfit: Lightning turns the training rows' shuffling off, as it should
    (r"You requested to overfit but enabled train dataloader shuffling", UserWarning, r"pytorch_lightning\."),
)
TIP = "💡 Tip: "  # Lightning's advertisements (litlogger, litmodels), INFO lines of its rank_zero logger
RANK_ZERO = "pytorch_lightning.utilities.rank_zero"  # the logger of Lightning's (and Fabric's) rank_zero_info
LIGHTNING = ("pytorch_lightning", "lightning_fabric")
PROFILER = "pytorch_lightning.profilers"  # a profiler's report is asked for (debug=profiler): always shown


def verbose() -> bool:
    """Whether the command asked for libraries' INFO lines: `hydra.verbose` (false outside Hydra's jobs)."""
    return HydraConfig.initialized() and bool(HydraConfig.get().verbose)


def no_tip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(TIP)


def install(verbose: bool) -> None:
    """Filter the known noise in this process (again: no duplicate filters); Lightning's INFO lines only
    when `verbose`."""
    for message, category, module in WARNINGS:
        warnings.filterwarnings("ignore", message, category, module)
    logging.getLogger(RANK_ZERO).addFilter(no_tip)
    for name in LIGHTNING:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger(PROFILER).setLevel(logging.INFO)
