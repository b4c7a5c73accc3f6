"""One study, several workers, on a real PostgreSQL server (.ci/services starts one): workers that open
an empty database at once, two searches sharing one study, a worker killed mid-trial, and the search's
trials as Slurm jobs."""

import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import ROOT
from test_search import HOPELESS, tiny_search

pytestmark = [pytest.mark.postgres]
State = optuna.trial.TrialState
# heartbeats every second: a dead worker's trial fails within seconds
HEARTBEAT = ("hydra.sweeper.heartbeat.heartbeat_interval=1", "hydra.sweeper.heartbeat.grace_period=4")


def search(tmp_path, tiny_data, url, n_trials, launcher="basic"):
    sweep, command = tiny_search(tmp_path, tiny_data, launcher)
    command = [c for c in command if not c.startswith("hydra.sweeper.n_trials=")] + [
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.storage={url}",
        *HEARTBEAT,
    ]
    # the preset's seeded TPE sampler, not tiny_search's random one: workers seeded alike must still differ
    return sweep, [c for c in command if not c.startswith("hydra.sweeper.sampler._target_=")]


def start(command, cwd, log):
    return subprocess.Popen(
        command, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )


def launched(log) -> list[int]:
    """The trials a worker ran, from its launcher's log lines `#N : overrides`."""
    return [int(n) for n in re.findall(r"\t#(\d+) : ", log.read_text())]


def best_trial(log) -> str:
    """What a worker printed about the best trial: its number, objective and command."""
    text = log.read_text()
    return re.search(r"best trial: .*\n.*\n", text)[0]


def study(url):
    return optuna.load_study(study_name="tiny", storage=url)


@pytest.mark.timeout(120)
def test_workers_that_open_an_empty_database_at_once_all_get_the_study(postgres, tmp_path):
    """Optuna's race (#1092): all but one of the workers that create the tables of an empty database fail."""
    opener = (
        f"import sys, time\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from omegaconf import OmegaConf\nfrom keypoints.sweeps.search import open_study\n"
        f"settings = OmegaConf.create({{'study_name': 'race', 'storage': {postgres!r}, 'direction': 'minimize',\n"
        "    'pruner': {'_target_': 'optuna.pruners.NopPruner'}, 'heartbeat': {}})\n"
        "t = float(sys.argv[1])\nwhile time.time() < t: pass\n"
        "print(open_study(settings)[0]._study_id)\n"
    )
    at = str(time.time() + 8)  # every worker past its imports
    workers = [
        subprocess.Popen([sys.executable, "-c", opener, at], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [w.communicate(timeout=60) for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, [err[-2000:] for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1  # one study
    assert len(optuna.get_all_study_names(postgres)) == 1


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_workers_share_one_study_and_report_the_same_best_trial(postgres, tiny_data, tmp_path):
    sweep, command = search(tmp_path, tiny_data, postgres, n_trials=6)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [start(command, tmp_path, log) for log in logs]  # at once, on an empty database
    try:
        assert [w.wait(timeout=200) for w in workers] == [0, 0], [log.read_text()[-3000:] for log in logs]
    finally:
        for w in workers:
            w.kill()
    trials = study(postgres).trials
    # each trial ran once, by one worker, with parameters of its own; both workers took part
    a, b = (launched(log) for log in logs)
    assert a and b and not set(a) & set(b) and sorted(a + b) == [t.number for t in trials]
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params), params
    # two workers asking at the same instant may both take the last trial: at most one more
    assert len(trials) in (6, 7) and all(t.state in (State.COMPLETE, State.PRUNED) for t in trials)
    for t in trials:  # pruning works across the workers
        hopeless = t.params["schedule.scheduler.max_lr"] == HOPELESS
        assert t.state == (State.PRUNED if hopeless else State.COMPLETE)
    # each waited for the other's trials, then printed and wrote the same best trial
    assert best_trial(logs[0]) == best_trial(logs[1])
    assert f"best trial: {study(postgres).best_trial.number}," in best_trial(logs[0])
    printed = best_trial(logs[0]).splitlines()[1].strip()
    preset = (sweep / "best.yaml").read_text()
    assert f"# {printed}\n" in preset
    # the command once more, by a third worker: nothing to run, the same best trial and preset
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "Launching" not in again.stdout + again.stderr
    assert re.search(r"best trial: .*\n.*\n", again.stdout)[0] == best_trial(logs[0])
    assert (sweep / "best.yaml").read_text() == preset


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_worker_killed_mid_trial_has_its_trial_failed_and_run_again_by_the_other(postgres, tiny_data, tmp_path):
    """The other worker's heartbeat thread fails the dead worker's trial as soon as its grace period ends,
    while its own trial still trains, and says so; the parameters run again."""
    sweep, command = search(tmp_path, tiny_data, postgres, n_trials=3)
    # trials that train for several grace periods, none stopped by the pruner at once
    command = [c for c in command if not c.startswith(("trainer.max_epochs=", "schedule"))] + ["trainer.max_epochs=60"]
    logs = [tmp_path / "killed.log", tmp_path / "other.log"]
    killed, other = workers = [start(command, tmp_path, log) for log in logs]
    training = lambda log: launched(log) and (sweep / f"{launched(log)[-1]}_all" / "hparams.yaml").is_file()  # noqa: E731
    try:
        deadline = time.time() + 120
        while not (training(logs[0]) and training(logs[1])):
            assert time.time() < deadline and killed.poll() is None, logs[0].read_text()[-3000:]
            time.sleep(0.05)
        lost, running = launched(logs[0])[-1], launched(logs[1])[-1]  # training, as one worker is killed
        killed.send_signal(signal.SIGKILL)
        at = time.time()
        while study(postgres).trials[lost].state == State.RUNNING:
            assert time.time() - at < 4 + 1 + 5, "not failed when its grace period ended"  # HEARTBEAT, and slack
            time.sleep(0.2)
        assert study(postgres).trials[running].state == State.RUNNING  # by the other's heartbeat, mid-trial
        assert other.wait(timeout=200) == 0, logs[1].read_text()[-3000:]
    finally:
        for w in workers:
            w.kill()
    trials = study(postgres).trials
    dead = trials[lost]
    assert dead.state == State.FAIL  # by the other worker, when its heartbeat stopped: not left running
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == lost]
    assert retry.params == dead.params and retry.state in (State.COMPLETE, State.PRUNED)
    assert retry.number in launched(logs[1])
    assert (
        f"trial {lost} failed: its worker stopped beating (hydra.sweeper.heartbeat.grace_period); its parameters "
        f"run again as trial {retry.number}" in logs[1].read_text()
    )
    counted = [t for t in trials if t.number != lost]
    assert len(counted) in (3, 4) and all(t.state in (State.COMPLETE, State.PRUNED) for t in counted)
    assert re.search(r"\d+ jobs in .*: \d+ completed, \d+ pruned, 0 failed, 1 unfinished", logs[1].read_text())


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_search_runs_its_trials_as_slurm_jobs_against_the_postgresql_study(slurm, postgres, tiny_data, tmp_path):
    sweep, command = search(tmp_path, tiny_data, postgres, n_trials=4, launcher="slurm")
    command += [
        "hydra.launcher.partition=debug",
        "trainer=cpu",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.sweeper.n_jobs=2",
    ]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = study(postgres).trials
    assert len(trials) == 4
    jobs = re.findall(r"#(\d+) : Slurm job (\S+) :", proc.stdout + proc.stderr)
    assert sorted(int(n) for n, _ in jobs) == [0, 1, 2, 3]  # each trial a Slurm job, two at a time
    for t in trials:  # each job reported its epochs to the study, and the pruner stopped the hopeless ones
        hopeless = t.params["schedule.scheduler.max_lr"] == HOPELESS
        assert t.state == (State.PRUNED if hopeless else State.COMPLETE)
        assert sorted(t.intermediate_values) == ([0] if hopeless else [0, 1, 2])
        # a Slurm job named for its trial, whose end the sweep announced
        ended = "pruned" if hopeless else r"finished, valid RMSE \d+\.\d+ px"
        assert re.search(rf"job {t.number} \(kfkd:tiny:trial{t.number}, Slurm \d+\): {ended}\n", proc.stdout), t.number
    assert f"best trial: {study(postgres).best_trial.number}, valid_rmse_px" in proc.stdout
