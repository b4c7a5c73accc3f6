"""Faults on the cluster that .ci/services starts, as a user meets them: the study's database lost in the
middle of a search and a rerun, a specialist cancelled in a sweep on Slurm (and what the sweep still
gives), and a controller that does not answer."""

import logging
import os
import re
import shlex
import subprocess
import sys

import optuna
import pytest
from conftest import ROOT, TINY
from test_cluster import SLURM, wait_for
from test_search import tiny_search
from test_shared_study import HEARTBEAT, start

from keypoints.cli import main as kfkd

State = optuna.trial.TrialState
SERVICES = ROOT / ".ci" / "services"


def services(command: str) -> None:
    subprocess.run([str(SERVICES), command], check=True, capture_output=True, timeout=60)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_database_lost_mid_trial_is_one_line_and_the_printed_command_goes_on(postgres, tiny_data, tmp_path):
    """PostgreSQL stopped (by its pid) while trial 0 trains: the run trains on, the command ends with one
    line naming the storage and the lost connection and printing the command to run again. Once the server
    is back, that command fails trial 0, runs its parameters again, completes the study, and judges only
    the jobs it ran."""
    sweep, command = tiny_search(tmp_path, tiny_data, "basic")
    # no hopeless choice, which the pruner would stop at once: trial 0 must still train when the server stops
    command = [c for c in command if not c.startswith(("hydra.sweeper.n_trials=", "trainer.max_epochs=", "schedule"))]
    command += ["hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={postgres}", "trainer.max_epochs=15", *HEARTBEAT]
    log = tmp_path / "first.log"
    first = start(command, tmp_path, log)
    try:
        wait_for(lambda: (sweep / "0_all" / "hparams.yaml").is_file(), 120, "trial 0 training")
        services("postgres-stop")
        try:
            assert first.wait(timeout=120) == 1
        finally:
            services("postgres-start")
    finally:
        first.kill()
    output = log.read_text()
    assert "Traceback" not in output and "StorageInternalError" not in output, output[-3000:]
    (error,) = [line for line in output.splitlines() if line.startswith("error:")]
    shown = re.sub(r":kfkd@", ":***@", postgres)
    assert error.startswith(f"error: hydra.sweeper.storage={shown}: lost the connection to the study's database (")
    rerun = error.split("once it answers, trial(s) 0 fail and run again with the same command: ")[1]
    assert rerun == shlex.join(["python", *(c.replace(postgres, shown) for c in command[1:])])  # no password
    assert (sweep / "0_all" / "metrics.json").is_file()  # the run trained on to its end: nothing lost

    again = subprocess.run(
        ["bash", "-c", rerun.replace("python ", f"{sys.executable} ", 1).replace(shown, postgres)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "trial 0 failed: the study's database was lost while it ran; its parameters run again" in again.stdout
    trials = optuna.load_study(study_name="tiny", storage=postgres).trials
    assert trials[0].state == State.FAIL
    (retry,) = [t for t in trials[1:] if t.params == trials[0].params]
    assert [t.state for t in trials[1:]] == [State.COMPLETE, State.COMPLETE] and retry.number in (1, 2)
    # its verdict is about its own two jobs; trial 0's run directory, of the first command, is kept
    assert f"2 jobs in {sweep}: 2 completed, 0 pruned, 0 failed" in again.stdout
    assert (sweep / "0_all" / "metrics.json").is_file() and not (sweep / "lost_trials.json").exists()


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_specialists_sweep_with_a_cancelled_specialist_is_watchable_and_still_gives_what_it_can(
    slurm, tiny_data, tmp_path, caplog, capsys
):
    """The base net and six specialists as Slurm jobs, named for what they run; eyes is cancelled as it
    trains. The sweep says as each job starts, trains, ends or is cancelled; it still writes the curves of
    the runs that finished and a submission whose eyes' columns are the base net's, and exits 1 for eyes
    alone. submit and evaluate skip the failed run, saying so, unless --strict."""
    sweep = tmp_path / "sweep"
    log = tmp_path / "sweep.log"
    args = [
        *SLURM,
        "data=kaggle",
        f"data.dir={tiny_data}",
        f"paths.cache_dir={tmp_path}/cache",
        *TINY,
        "trainer.enable_progress_bar=true",
        "trainer.max_epochs=40",  # long enough (seconds) that eyes is cancelled as it trains
        f"hydra.sweep.dir={sweep}",
    ]
    sweeping = subprocess.Popen(
        [sys.executable, "-m", "keypoints", "specialists", *args],
        cwd=tmp_path,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for(lambda: (sweep / "0_eyes" / "config.yaml").is_file(), 240, "the eyes specialist starting")
        ids = {n: job for n, job in re.findall(r"#(\d+) : Slurm job (\S+) : .*specialist=eyes", log.read_text())}
        (eyes,) = ids.values()
        subprocess.run(["scancel", eyes], check=True)
        assert sweeping.wait(timeout=300) == 1
    finally:
        sweeping.kill()
    output = log.read_text()
    # each job a Slurm job of its own, named for what it runs
    names = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,JobName%60", "-j", ",".join(slurm_jobs_of(output))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    named = dict(line.split("|") for line in names.split())
    assert named[eyes] == f"kfkd:{sweep.name}:eyes"
    assert sorted(named.values()) == sorted(
        f"kfkd:{sweep.name}:{s}" for s in ["all", "eyes", "nose", "mouth", "mouth_bottom", "eye_corners", "eyebrows"]
    )
    # one line per state change, as the jobs run
    job = lambda name: rf"job \d+ \(kfkd:{sweep.name}:{name}, Slurm \d+\): "  # noqa: E731
    assert re.search(job("eyes") + r"started\n(.*\n)*.*" + job("eyes") + "cancelled\n", output), output[-4000:]
    for name in ["all", "nose", "mouth", "mouth_bottom", "eye_corners", "eyebrows"]:
        assert re.search(
            job(name) + r"started\n(.*\n)*.*" + job(name) + r"finished, valid RMSE \d+\.\d{3} px\n", output
        )
    # a job's epoch as it trains, at most once a minute (each job here trains for seconds)
    epochs = re.findall(rf"job \d+ \((kfkd:{sweep.name}:\w+), Slurm \d+\): epoch \d+/39\n", output)
    assert epochs and len(set(epochs)) == len(epochs)
    # the summary names eyes alone, once
    assert "6 jobs in" in output and "1 of 6 jobs failed" in output
    assert output.count(f"\n    Slurm job {eyes} was cancelled") == 1 and f"failed: Slurm job {eyes}" not in output
    # what the sweep gives all the same
    assert (sweep / "curves.png").stat().st_size > 10000
    assert f"submission: {sweep / 'submission.csv'} (the base net's columns stand in for eyes, whose run failed)" in (
        output
    )
    # each job's Slurm log: one plain line per epoch, no carriage-return bar
    nose = (sweep / ".submitit").glob("*/*_log.out")
    logs = {p: p.read_text() for p in nose}
    assert logs and not any("\r" in text for text in logs.values())
    assert any(len(re.findall(r"_nose: epoch \d+/39 ", text)) == 40 for text in logs.values())

    # `kfkd submit` and `kfkd evaluate` in this process (as tests/inference does): no interpreter to start
    for tool in ["submit", "evaluate"]:
        extra = ["--out", str(tmp_path / "again.csv")] if tool == "submit" else []
        caplog.clear()
        kfkd([tool, str(sweep), *extra])  # returns: exit status 0
        (skipped,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
        assert skipped.startswith(f"skipped {sweep / '0_eyes'}: its run failed (Slurm job {eyes} was cancelled")
        caplog.clear()
        capsys.readouterr()
        with pytest.raises(SystemExit) as strict:
            kfkd([tool, str(sweep), "--strict", *extra])
        assert str(strict.value.code).startswith(f"error: {sweep / '0_eyes'}: its run failed (")  # exit status 1
        # and that error is the first thing on stderr: nothing written or logged (WARNING is shown) before it
        assert not capsys.readouterr().err and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert (tmp_path / "again.csv").read_bytes() == (sweep / "submission.csv").read_bytes()


def slurm_jobs_of(output: str) -> list[str]:
    return re.findall(r"#\d+ : Slurm job (\S+) :", output)


@pytest.mark.slurm
@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_a_controller_that_does_not_answer_is_named_and_the_refused_search_leaves_nothing(
    slurm, postgres, tiny_data, tmp_path
):
    """A search on PostgreSQL whose Slurm controller does not answer (a slurm.conf with another port): one
    line that says so, and no outputs/search/<study> left behind; the study keeps its trial for the next
    command."""
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        re.sub(r"(?m)^SlurmctldPort=.*\n", "", open(os.environ["SLURM_CONF"]).read()) + "SlurmctldPort=6999\n"
    )
    sweep, command = tiny_search(tmp_path, tiny_data, "slurm")
    command += [*SLURM[1:], f"hydra.sweeper.storage={postgres}"]
    proc = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=100, env={**os.environ, "SLURM_CONF": str(conf)}
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: hydra.launcher: the Slurm controller does not answer (sbatch: error: "), error
    assert not sweep.exists()
    (trial,) = optuna.load_study(study_name="tiny", storage=postgres).trials[:1]
    assert trial.state == State.FAIL and trial.user_attrs["interrupted"]  # given back: the next command runs it
