"""A sweep's Slurm jobs as they run: one line per change of a job's state, in the sweep's output.

    job 2 (kfkd:2026-12-07_06-20-00:eyes, Slurm 14): started
    job 2 (kfkd:2026-12-07_06-20-00:eyes, Slurm 14): epoch 3/9
    job 2 (kfkd:2026-12-07_06-20-00:eyes, Slurm 14): requeued
    job 2 (kfkd:2026-12-07_06-20-00:eyes, Slurm 14): started again (start 2)
    job 2 (kfkd:2026-12-07_06-20-00:eyes, Slurm 14): finished, valid RMSE 2.871 px

The state comes from Slurm's accounting (the launcher's one sacct call per poll, keypoints/sweeps/cluster.py)
and from the job's own log, `.submitit/<id>/<id>_0_log.out`: submitit writes a line there each time the job
starts, and the run's progress line one line per epoch (keypoints/training/progress.py). An epoch is shown at
most every EPOCH_S seconds a job. Why a job failed is the sweep's summary's to say (its error.txt), not
repeated here.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

log = logging.getLogger(__name__)
EPOCH_S = 60  # a job's epoch is shown at most this often
STARTED = "Starting with JobEnvironment"  # submitit's line at each start of a job, in its stdout
EPOCH = re.compile(r"epoch (\d+)/(\d+)")  # the progress line's


def ended(run: Path) -> str:
    """How a run that returned ended, from what it left in its directory."""
    if (run / "metrics.json").is_file():
        return f"finished, valid RMSE {json.loads((run / 'metrics.json').read_text())['valid_rmse_px']:.3f} px"
    if (run / "pruned.txt").is_file():
        return "pruned"
    return f"failed (its error.txt: {run / 'error.txt'})"


class Watch:
    """Shows the state changes of jobs (number -> (submitit job, Slurm job name)) at each `update`."""

    def __init__(self, jobs: dict[int, tuple]):
        self.jobs = jobs
        self.shown: dict[int, str] = {}  # the last state shown of each job
        self.starts: dict[int, int] = {}  # the starts of each job seen in its log
        self.epochs: dict[int, tuple[str, float]] = {}  # each job's last epoch shown, and when
        self.over: set[int] = set()

    def say(self, number: int, what: str) -> None:
        job, name = self.jobs[number]
        log.info(f"job {number} ({name}, Slurm {job.job_id}): {what}")

    def update(self) -> None:
        for number, (job, _) in self.jobs.items():
            if number not in self.over:
                self.check(number, job)

    def check(self, number: int, job) -> None:
        out = job.paths.stdout.read_text(errors="replace") if job.paths.stdout.is_file() else ""
        self.starts_seen(number, out.count(STARTED))  # first: a job may start and end between two polls
        if job.paths.result_pickle.exists():
            self.over.add(number)
            try:
                run = Path(job.result().hydra_cfg.hydra.runtime.output_dir)
            except Exception:  # it failed outside Hydra's run_job: the summary says how
                self.say(number, f"failed (its error file: {job.paths.stderr})")
                return
            self.say(number, ended(run))
            return
        state = job.watcher.get_state(job.job_id, mode="cache").split()[0] if job.job_id else "UNKNOWN"
        if job.watcher.is_done(job.job_id, mode="cache"):
            self.over.add(number)
            self.say(number, "cancelled" if state == "CANCELLED" else f"ended without a result ({state})")
            return
        if state in ("PENDING", "REQUEUED") and number in self.starts and self.shown.get(number) != "requeued":
            self.shown[number] = "requeued"
            self.say(number, "requeued")
        epochs = EPOCH.findall(out[out.rfind(STARTED) :])
        if "started" in self.shown.get(number, "") and epochs:
            epoch, clock = "/".join(epochs[-1]), time.monotonic()
            last, when = self.epochs.get(number, ("", -EPOCH_S))
            if epoch != last and clock - when >= EPOCH_S:
                self.epochs[number] = (epoch, clock)
                self.say(number, f"epoch {epoch}")

    def starts_seen(self, number: int, starts: int) -> None:
        """Say the job's starts that its log shows and that were not said yet."""
        if starts > self.starts.get(number, 0):
            self.starts[number] = starts
            now = "started" if starts == 1 else f"started again (start {starts})"
            if starts > 1 and self.shown.get(number) != "requeued":  # requeued between two polls
                now = f"requeued, {now}"
            self.shown[number] = now
            self.say(number, now)
