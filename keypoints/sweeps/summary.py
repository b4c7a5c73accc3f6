"""A sweep's verdict: which of its jobs completed, were pruned or failed, and why each failure happened."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

from hydra.core.utils import JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger(__name__)
CLOCK_SLACK_S = 1  # a file's time stamp may lag the clock by a tick of the file system


class SweepSummary(Callback):
    """In a multirun, every job runs even when some fail; the sweep ends counting the jobs that
    completed, were pruned (a search's trials: keypoints/sweeps/search.py) and failed, and naming each failed
    job and why, and exits 1 if any failed. Each failure's traceback is kept in its job directory's
    error.txt; a pruned job's directory has pruned.txt instead.

    Hydra 1.3's sweeper re-raises the first failure once the jobs have run and so skips
    on_multirun_end; recording the failure here and marking it handled lets the summary run. A pruned
    job stays failed with optuna.TrialPruned, for the Optuna sweeper to tell the study.
    """

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or job_return.status != JobStatus.FAILED:
            return
        from optuna import TrialPruned

        error = job_return._return_value  # the job's exception; `return_value` would re-raise it
        if isinstance(error, TrialPruned):
            header = f"job {config.hydra.job.num}: {' '.join(job_return.overrides)}"
            (Path(config.hydra.runtime.output_dir) / "pruned.txt").write_text(f"{header}\n{error}\n")
            log.info(f"{header}: {error}")
            return
        record_failure(config, job_return.overrides, error)
        job_return.status, job_return.return_value = JobStatus.COMPLETED, None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        # This command's jobs only: what earlier commands left in the same directory (a rerun's) is
        # kept, and not judged again. Hydra writes a job's .hydra/ as it starts; a job that Slurm
        # cancelled before it started has an error.txt and nothing else.
        ours = lambda path: path.is_file() and path.stat().st_mtime >= self.started - CLOCK_SLACK_S
        jobs = {p.parent.parent for p in sweep.rglob(".hydra/overrides.yaml") if ours(p)} | {
            p.parent for p in sweep.rglob("error.txt") if ours(p)
        }
        counts = {
            kind: sum(ours(job / marker) for job in jobs)
            for kind, marker in [("completed", "metrics.json"), ("pruned", "pruned.txt"), ("failed", "error.txt")]
        }
        unfinished = len(jobs) - sum(counts.values())  # e.g. stopped by Ctrl-C
        print(
            f"{len(jobs)} jobs in {sweep}: "
            + ", ".join(f"{n} {kind}" for kind, n in counts.items())
            + (f", {unfinished} unfinished" if unfinished else "")
        )
        failures = sorted(
            (p.read_text().splitlines()[:2] for p in (job / "error.txt" for job in jobs) if ours(p)),
            key=lambda lines: int(lines[0].split()[1].rstrip(":")),
        )
        if failures:
            print(
                f"{len(failures)} of {len(jobs)} jobs failed (tracebacks in each job's error.txt, under {sweep}):",
                *(f"  {header}\n    {message}" for header, message in failures),
                sep="\n",
                file=sys.stderr,
            )
            sys.exit(1)  # not an exception: Hydra would turn that into a warning


def record_failure(config: DictConfig, overrides, error: BaseException) -> None:
    """A failed job of a sweep: its first line, with where a Slurm job logged, and its traceback go to its
    directory's error.txt, which the sweep's summary lists."""
    error = slurm_verdict(error)
    text = str(error) if isinstance(error, CompactHydraException) else f"{type(error).__name__}: {error}"
    message = text.strip().splitlines()[0] + slurm_log()
    header = f"job {config.hydra.job.num}: {' '.join(overrides)}"
    out = Path(config.hydra.runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.txt").write_text(f"{header}\n{message}\n\n{''.join(traceback.format_exception(error))}")
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":  # in the job's own log; the sweep's summary says it once
        log.error(f"{header} failed: {message}")


def slurm_verdict(error: BaseException) -> BaseException:
    """submitit's verdict on a job it will not requeue ("timed-out too many times"), where the error holds
    one: its signal handler raises it wherever the job is, and a library may wrap it in an error of its
    own (Lightning's logger does, in a ValueError about logging nan)."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return error
    from submitit.core.utils import UncompletedJobError

    cause = error
    while cause is not None and not isinstance(cause, UncompletedJobError):
        cause = cause.__cause__ or cause.__context__
    return cause or error


def slurm_log() -> str:
    """In a Slurm job of submitit's: ' (Slurm job ID, its error file: PATH)'; elsewhere ''."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return ""
    import submitit

    job = submitit.JobEnvironment()
    return f" (Slurm job {job.job_id}, its error file: {job.paths.stderr})"
