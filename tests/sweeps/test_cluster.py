"""The cluster, for real: multiruns whose jobs are Slurm jobs (hydra/launcher=slurm) on the cluster that
.ci/services starts, the specialists' sweep, failed and cancelled jobs, and preempted, requeued and timed
out jobs that resume to the metrics of a run never stopped."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
# A job a CPU and a gigabyte of this two-core node: two jobs run at a time.
SLURM = (
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "trainer=cpu",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
)
# Four batches an epoch, flips and dropout: what a resumed run must reproduce exactly.
SMALL = (
    "data=kaggle",
    "loss=masked",
    "data.batch_size=16",
    "augment=flip",
    "net=cnn_bn",
    "net.channels=[4,4,4,4]",
    "net.hidden=8",
    "net.dropout=[0.1,0.2,0.3,0.3,0.5,0.0]",
    "trainer.enable_progress_bar=false",
)


def command(*args):
    return [sys.executable, str(ROOT / "train.py"), *args]


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.1)


def slurm_jobs(sweep: Path) -> dict[int, str]:
    """Job number -> Slurm job id, as the launcher logged them."""
    log = (sweep / "sweep.log").read_text() if (sweep / "sweep.log").is_file() else ""
    return {int(n): job for n, job in re.findall(r"#(\d+) : Slurm job (\S+) :", log)}


def start(cwd: Path, sweep: Path, *args) -> subprocess.Popen:
    """`python train.py -m ARGS` with its output in SWEEP/sweep.log."""
    sweep.mkdir(parents=True)
    return subprocess.Popen(
        command("-m", *SLURM, f"hydra.sweep.dir={sweep}", *args),
        cwd=cwd,
        stdout=open(sweep / "sweep.log", "w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def signal_job(job_id: str, *signals: int) -> None:
    """Send signals to a job's process, as Slurm does when it preempts a job or its time runs out.
    (submitit's Job._interrupt sends them with `scancel --signal`, which Slurm 22.05 answers for an array
    task whose array still has tasks pending with "Job can not be altered now", and scancel then sends the
    signal again every few seconds.)"""
    raw = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%A"], capture_output=True, text=True).stdout.strip()
    pids = subprocess.run(["scontrol", "listpids", raw], capture_output=True, text=True, check=True).stdout
    (python,) = [int(pid) for pid, _, step, *_ in map(str.split, pids.splitlines()[1:]) if step == "0"]  # srun's task
    for number in signals:
        os.kill(python, number)


def files(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.timeout(360)
def test_the_specialists_sweep_on_slurm_leaves_what_the_local_launcher_leaves(slurm, tiny_data, tmp_path):
    """The base net and the six specialists, each a Slurm job: the same runs, curves, submission and
    summary as the same sweep run on this machine."""
    args = ["data=kaggle", f"data.dir={tiny_data}", f"paths.cache_dir={tmp_path}/cache", *TINY, "trainer.max_epochs=2"]
    # Both sweeps at once: the local one trains while the Slurm jobs start (each job spends most of its
    # seconds importing), so the test takes about as long as the Slurm sweep alone.
    sweeps, outputs = {}, {}
    with contextlib.ExitStack() as files:
        for where, launcher in [("local", []), ("slurm", list(SLURM))]:
            sweeps[where] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "keypoints",
                    "specialists",
                    *launcher,
                    *args,
                    f"hydra.sweep.dir={tmp_path}/{where}",
                ],
                cwd=tmp_path,
                stdout=files.enter_context(open(tmp_path / f"{where}.out", "w")),
                stderr=files.enter_context(open(tmp_path / f"{where}.err", "w")),
            )
        try:
            for where, proc in sweeps.items():
                code = proc.wait(timeout=300)
                outputs[where] = (tmp_path / f"{where}.out").read_text()
                assert code == 0, outputs[where][-3000:] + (tmp_path / f"{where}.err").read_text()[-3000:]
        finally:
            for proc in sweeps.values():
                proc.kill()
    local, slurm_sweep = tmp_path / "local", tmp_path / "slurm"

    def layout(sweep):  # the files, but for TensorBoard's names (they hold the time and process id)
        return sorted(
            re.sub(r"events\.out\.tfevents\..*", "events", str(p.relative_to(sweep)))
            for p in sweep.rglob("*")
            if p.is_file() and ".submitit" not in p.parts
        )

    assert layout(slurm_sweep) == layout(local)
    runs = sorted(p.name for p in local.iterdir() if (p / "metrics.json").is_file())
    assert len(runs) == 7 and "all" in runs
    for run in runs:  # the same training, to the bit: same seeds, same machine
        assert metrics(slurm_sweep / run)["history"] == metrics(local / run)["history"], run
    assert (slurm_sweep / "submission.csv").read_bytes() == (local / "submission.csv").read_bytes()
    assert (slurm_sweep / "curves.png").stat().st_size > 10000
    for where, sweep in [("local", local), ("slurm", slurm_sweep)]:  # the base net's command, the specialists'
        assert f"1 jobs in {sweep}: 1 completed, 0 pruned, 0 failed" in outputs[where]
        assert f"6 jobs in {sweep}: 6 completed, 0 pruned, 0 failed" in outputs[where]
    # every run was a Slurm job of its own: its log is in the sweep's .submitit folder
    logs = list((slurm_sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 7 and all("Job completed successfully" in log.read_text() for log in logs)


@pytest.mark.timeout(240)
def test_failed_killed_and_cancelled_jobs_are_summarised_and_not_waited_for(slurm, tiny_data, tmp_path):
    sweep = tmp_path / "sweep"
    sweeping = start(
        tmp_path,
        sweep,
        *SMALL,
        f"data.dir={tmp_path}/nowhere,{tiny_data}",
        "seed=0,1",
        f"paths.cache_dir={tmp_path}/cache",
        "trainer.max_epochs=1000",
    )
    try:
        # jobs 0 and 1 fail in Python at once; 2 and 3 train until one is cancelled and the other killed
        running = [sweep / f"{n}_all" / "hparams.yaml" for n in (2, 3)]  # written as training starts
        wait_for(lambda: all(p.is_file() for p in running), 120, "jobs 2 and 3 training")
        ids = slurm_jobs(sweep)
        subprocess.run(["scancel", ids[2]], check=True)
        signal_job(ids[3], signal.SIGKILL)  # as the kernel's OOM killer would
        stopped = time.time()
        assert sweeping.wait(timeout=120) == 1
    finally:
        sweeping.kill()
    waited = time.time() - stopped
    log = (sweep / "sweep.log").read_text()
    assert waited < 60, f"the sweep took {waited:.0f} s to see its jobs end:\n{log[-3000:]}"
    summary = log[log.index("4 of 4 jobs failed") :]
    lines = dict(re.findall(r"  job (\d): .*\n    (.*)", summary))
    for n in (0, 1):
        assert lines[str(n)].startswith(f"error: {tmp_path}/nowhere/training.csv: file not found")
        assert lines[str(n)].endswith(
            f"(Slurm job {ids[n]}, its error file: {sweep}/.submitit/{ids[n]}/{ids[n]}_0_log.err)"
        )
    assert lines["2"] == (
        f"Slurm job {ids[2]} was cancelled (CANCELLED by 0); its error file: "
        f"{sweep}/.submitit/{ids[2]}/{ids[2]}_0_log.err"
    )
    assert re.fullmatch(
        rf"Slurm job {ids[3]} ended without a result \(FAILED\); its error file: "
        rf"{sweep}/.submitit/{ids[3]}/{ids[3]}_0_log.err",
        lines["3"],
    ), lines["3"]
    for n in range(4):  # each error file named is there, and each job's error.txt keeps the whole story
        assert (sweep / ".submitit" / ids[n] / f"{ids[n]}_0_log.err").is_file()
        assert lines[str(n)] in (sweep / f"{n}_all" / "error.txt").read_text()


@pytest.mark.timeout(60)
def test_a_request_the_cluster_cannot_meet_is_a_one_line_error(slurm, tmp_path):
    proc = subprocess.run(
        command("-m", *SLURM, "hydra.launcher.cpus_per_task=64", f"hydra.sweep.dir={tmp_path}/sweep", "seed=0,1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        "error: hydra.launcher: Slurm refused the jobs: sbatch: error: Batch job submission "
        "failed: More processors requested than permitted\n"
    ), proc.stderr[-2000:]
    assert not (tmp_path / "sweep").exists()  # neither its multirun.yaml nor submitit's files are left


@pytest.mark.timeout(420)
def test_preempted_requeued_and_timed_out_jobs_resume_to_the_metrics_of_a_run_never_stopped(slurm, tiny_data, tmp_path):
    """Four identical jobs. 0: preempted as submitit's Job._interrupt does it (SIGTERM, then USR2); 1:
    `scontrol requeue` (SIGTERM, SIGKILL, started again by Slurm); 2: timed out twice, once more than
    max_num_timeout; 3: left alone. (With a time limit under 10 minutes, submitit counts every USR2 as a
    timeout.)"""
    sweep = tmp_path / "sweep"
    sweeping = start(
        tmp_path,
        sweep,
        *SMALL,
        f"data.dir={tiny_data}",
        f"paths.cache_dir={tmp_path}/cache",
        "trainer.max_epochs=40",  # long enough (seconds) that each job is stopped as it trains, not after
        "seed=0,0,0,0",
        "hydra.launcher.timeout_min=9",
        "hydra.launcher.max_num_timeout=1",
    )
    runs = [sweep / f"{n}_all" for n in range(4)]
    restarted = lambda n: (
        "Slurm started this job again (restart 1)"
        in ((runs[n] / "train.log").read_text() if (runs[n] / "train.log").is_file() else "")
    )
    try:
        ids = {}
        wait_for(lambda: ids.update(slurm_jobs(sweep)) or len(ids) == 4, 60, "the jobs submitted")
        checkpointed = lambda n: lambda: (runs[n] / "checkpoints" / "last.ckpt").exists()
        wait_for(checkpointed(0), 120, "job 0's first checkpoint")
        signal_job(ids[0], signal.SIGTERM, signal.SIGUSR2)  # submitit checkpoints and requeues
        wait_for(checkpointed(1), 120, "job 1's first checkpoint")
        subprocess.run(["scontrol", "requeue", ids[1]], check=True)
        wait_for(checkpointed(2), 120, "job 2's first checkpoint")
        signal_job(ids[2], signal.SIGUSR2)
        wait_for(lambda: restarted(2), 120, "job 2 started again")
        signal_job(ids[2], signal.SIGUSR2)  # a second timeout: max_num_timeout=1 is spent
        wait_for(lambda: (runs[3] / "metrics.json").is_file(), 240, "job 3's end")
        ended = files(runs[3])
        assert sweeping.wait(timeout=240) == 1
    finally:
        sweeping.kill()
    log = (sweep / "sweep.log").read_text()
    uninterrupted = metrics(runs[3])
    for n in (0, 1, 2):  # the sweep said so as it happened
        assert re.search(rf"job {n} \(kfkd:sweep:all, Slurm {ids[n]}\): requeued", log), log[-3000:]
    for n in (0, 1):
        assert restarted(n), (runs[n] / "train.log").read_text()[-2000:]
        assert f"resuming {runs[n]} from" in (runs[n] / "train.log").read_text()
        resumed = metrics(runs[n])
        assert resumed["history"] == uninterrupted["history"], n
        assert (resumed["valid_loss"], resumed["best_epoch"]) == (
            uninterrupted["valid_loss"],
            uninterrupted["best_epoch"],
        )
        assert not list(runs[n].rglob("hpc_ckpt*"))  # Lightning wrote no checkpoint of its own
    assert files(runs[3]) == ended  # the other runs' restarts wrote nothing into it
    assert "timed-out too many times" in (runs[2] / "error.txt").read_text()
    assert re.search(rf"1 of 4 jobs failed .*\n  job 2: .*\n    .*timed-out too many times.*Slurm job {ids[2]}", log), (
        log[-3000:]
    )
