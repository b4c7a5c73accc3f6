"""The cluster: a multirun's jobs as Slurm jobs (`hydra/launcher=slurm`), and runs that survive preemption.

Hydra's submitit launcher submits the jobs (its entry point: hydra_plugins/kfkd_slurm_launcher);
`launch` waits on them as a sweep needs. It asks Slurm's accounting (`sacct`, one call for all the
jobs) every POLL_S seconds, so that a job that Slurm ended without a result (cancelled by `scancel`,
killed, timed out too often) is seen within seconds and becomes a failure of the sweep, in its
directory's error.txt, naming its Slurm job id and error file, while the other jobs go on. Each job is
named for what it runs (`job_name`), and the sweep says as each job's state changes
(keypoints/sweeps/watch.py). A request that the cluster refuses, or a controller that does not answer,
is a one-line error, and leaves nothing of the submission behind.

Preemption, submitit's way: Slurm signals USR2 (preemption, or `signal_delay_s` before the time
limit); submitit has Hydra's launcher resubmit the same job, requeues it, and exits; on the way out
Lightning writes the checkpoint that waits in memory (keypoints/training/checkpoints.py). When the job runs
again, `requeued` finds its own run directory and the run goes on from its last checkpoint, as
`resume=` does, to the metrics of a run never stopped. A timeout is handled the same way, up to
`hydra.launcher.max_num_timeout` times. Lightning's own SLURM requeue listens for USR1, which neither
Slurm nor submitit sends here: it writes no checkpoint of its own.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import signal
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from keypoints.core.errors import RunError, SlurmJobLost, UserError
from keypoints.sweeps.summary import record_failure
from keypoints.sweeps.watch import Watch
from keypoints.training.faults import resume_checkpoint
from keypoints.training.rundir import saved_config

log = logging.getLogger(__name__)
# Seconds between the launcher's questions to sacct (one call for all its jobs), and how long a result may take
# to show on a shared file system after its job ended (submitit's figure). A one-node cluster on local disk (the
# tests') may ask more often and wait less: KFKD_SLURM_POLL_S, KFKD_SLURM_RESULT_GRACE_S.
POLL_S = float(os.environ.get("KFKD_SLURM_POLL_S", 5))
RESULT_GRACE_S = float(os.environ.get("KFKD_SLURM_RESULT_GRACE_S", 15))


def launch(launcher, job_overrides, initial_job_idx: int) -> list[JobReturn]:
    """hydra_plugins.kfkd_slurm_launcher.SlurmLauncher's launch: submit each job as a Slurm job named for
    what it runs, and wait for each to end, saying as their states change (keypoints/sweeps/watch.py); one
    that Slurm ended without a result is a failure of the sweep."""
    import submitit

    params = dict(launcher.params)
    executor = submitit.AutoExecutor(
        folder=params.pop("submitit_folder"), cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    shared = set(OmegaConf.structured(BaseQueueConf))  # the rest are Slurm's own: slurm_partition, ...
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    sweep = Path(str(launcher.config.hydra.sweep.dir))
    sweep.mkdir(parents=True, exist_ok=True)
    folder = submitit.core.utils.JobPaths.get_first_id_independent_folder(executor.folder)
    before = set(folder.iterdir()) if folder.is_dir() else None
    numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
    names = [job_name(launcher.config, list(o)) for o in job_overrides]
    jobs = []
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's refusal, which the error says
            for number, overrides, name in zip(numbers, job_overrides, names):
                executor.update_parameters(name=name)  # one Slurm job each, not an array: an array has one name
                jobs.append(
                    executor.submit(
                        launcher,
                        list(overrides),
                        "hydra.sweep.dir",
                        number,
                        f"job_id_for_{number}",
                        Singleton.get_state(),
                    )
                )
    except submitit.core.utils.FailedJobError as e:  # e.g. more CPUs than a node has, or no controller
        for job in jobs:
            job.cancel(check=False)
        undo_submission(sweep, folder, before)
        said = str(e).strip().splitlines()[-1]
        if "contact slurm controller" in said:
            raise UserError(
                f"error: hydra.launcher: the Slurm controller does not answer ({said}); `scontrol ping` says "
                f"whether it is up"
            ) from None
        raise UserError(f"error: hydra.launcher: Slurm refused the jobs: {said}") from None
    for number, job, overrides in zip(numbers, jobs, job_overrides):
        log.info(f"\t#{number} : Slurm job {job.job_id} : {' '.join(overrides)}")
    try:
        wait(jobs, Watch({n: (job, name) for n, job, name in zip(numbers, jobs, names)}))
    except BaseException:  # Ctrl-C or an error here: the sweep stops, its jobs too
        for job in jobs:
            if not job.done():
                job.cancel(check=False)
        raise
    return [
        outcome(launcher, job, list(overrides), number) for number, job, overrides in zip(numbers, jobs, job_overrides)
    ]


def job_name(config: DictConfig, overrides: list[str]) -> str:
    """What a job runs, as squeue and sacct show it: kfkd:<study>:trial<N> for a search's trial,
    kfkd:<sweep directory's name>:<specialist> for any other job."""
    given = dict(o.split("=", 1) for o in overrides if "=" in o)
    if "hydra.sweeper.trial" in given:
        return f"kfkd:{config.hydra.sweeper.study_name}:trial{given['hydra.sweeper.trial']}"
    return f"kfkd:{Path(str(config.hydra.sweep.dir)).name}:{given.get('specialist', config.specialist)}"


def undo_submission(sweep: Path, folder: Path, before: set[Path] | None) -> None:
    """After a refused submission, remove what this command wrote: submitit's files and, where the sweep
    directory holds nothing else (no earlier runs), the directory with its multirun.yaml."""
    for path in set(folder.iterdir()) - (before or set()) if folder.is_dir() else ():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if before is None and folder.is_dir():
        folder.rmdir()
    if {p.name for p in sweep.iterdir()} <= {"multirun.yaml"}:
        shutil.rmtree(sweep)


def outcome(launcher, job, overrides: list[str], number: int) -> JobReturn:
    """The job's own JobReturn, or for a job that Slurm ended without one, a failure of the sweep."""
    if job.paths.result_pickle.exists():
        error = job.exception()
        if error is None:
            return job.result()
        # it failed outside Hydra's run_job, e.g. its arguments could not be unpickled
        lost = SlurmJobLost(
            f"Slurm job {job.job_id} failed outside the run; its error file: {job.paths.stderr}\n{error}"
        )
    else:
        state = job.state
        what = "was cancelled" if state.startswith("CANCELLED") else "ended without a result"
        tail = (job.stderr() or "").strip().splitlines()[-20:]
        lost = SlurmJobLost(
            f"Slurm job {job.job_id} {what} ({state}); its error file: {job.paths.stderr}\n" + "\n".join(tail)
        )
    config = job_config(launcher, overrides, number, job.job_id)
    record_failure(config, overrides, lost)
    return JobReturn(
        overrides=overrides,
        cfg=config,
        hydra_cfg=OmegaConf.masked_copy(config, "hydra"),
        status=JobStatus.COMPLETED,
        _return_value=None,
    )


def job_config(launcher, overrides: list[str], number: int, job_id: str) -> DictConfig:
    """The job's config as Hydra's run_job would have set it up, its output directory included."""
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(config.hydra.job):
        config.hydra.job.id, config.hydra.job.num = job_id, number
    previous = HydraConfig.instance().cfg  # ${hydra:...} in the subdir reads the job's own
    HydraConfig.instance().set_config(config)
    try:
        out = Path(str(config.hydra.sweep.dir)) / str(OmegaConf.select(config, "hydra.sweep.subdir"))
    finally:
        HydraConfig.instance().cfg = previous
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(out)
    return config


def wait(jobs, watch: Watch) -> None:
    """Until each job has its result, or Slurm says it ended and RESULT_GRACE_S have passed without one;
    `watch` says how their states change."""
    ended: dict[str, float] = {}
    while True:
        jobs[0].watcher.update()  # the states of all the jobs not yet finished, in one sacct call
        watch.update()
        now = time.monotonic()
        waiting = [
            job
            for job in jobs
            if not job.paths.result_pickle.exists()
            and (
                not job.watcher.is_done(job.job_id, mode="cache")
                or now - ended.setdefault(job.job_id, now) < RESULT_GRACE_S
            )
        ]
        if not waiting:
            return
        time.sleep(POLL_S)


def requeued(cfg: DictConfig) -> tuple[DictConfig, Path | None]:
    """(config, checkpoint) to run with. In a job that Slurm started again (preempted, requeued, timed
    out: SLURM_RESTART_COUNT), the run its earlier attempt left in this same directory goes on from its
    last checkpoint with its own saved config; else the config as given, from the start."""
    out = Path(cfg.paths.output_dir)
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0))
    if not restarts or not (out / "config.yaml").is_file():
        return cfg, None
    saved = saved_config(out)
    try:
        checkpoint = resume_checkpoint(saved)
    except RunError:  # stopped before its first checkpoint: nothing to go on from
        log.warning(
            f"Slurm started this job again (restart {restarts}) before its first checkpoint: training from the start"
        )
        (out / "config.yaml").unlink()
        return cfg, None
    log.warning(f"Slurm started this job again (restart {restarts}): resuming from {checkpoint}")
    return saved, checkpoint


class Preemption(pl.Callback):
    """In a Slurm job of submitit's, SIGTERM does not stop training: Slurm sends it before USR2 when it
    preempts a job (submitit checkpoints and requeues on USR2), and before SIGKILL when it cancels or
    requeues one. Training goes on, as submitit's own SIGTERM handler would have it (Lightning's would stop
    it), and the checkpoint that waits in memory is written at the next step, so that a kill loses nothing."""

    def __init__(self):
        self.signalled = False

    def on_train_start(self, trainer, pl_module):
        signal.signal(signal.SIGTERM, self.note)  # Lightning restores its caller's handlers when fit ends

    def note(self, signum, frame):
        self.signalled = True

    def on_train_batch_end(self, trainer, *args):
        if self.signalled:
            self.signalled = False
            log.warning("SIGTERM: writing the newest checkpoint; training goes on until Slurm's USR2 or SIGKILL")
            flush = getattr(
                trainer.strategy.checkpoint_io, "flush", None
            )  # keypoints.training.checkpoints.PacedCheckpointIO
            if flush:
                flush()


def preemption() -> list[Preemption]:
    """In a Slurm job started by submitit, the callback that keeps SIGTERM from stopping training; else none."""
    return [Preemption()] if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" else []
