"""The Optuna search (hparams_search=..., hydra/sweeper=optuna): space, presets, pruning, the study
database, resuming, the best trial's command and preset, and the errors a user can make."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import ROOT
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from keypoints.core.errors import UserError
from keypoints.sweeps.search import Search, build, space

State = optuna.trial.TrialState
HOPELESS = 10000  # a max_lr at which every run blows up in its first epoch: the pruner must stop it


def test_space_reads_hydra_sweep_syntax():
    distributions, fixed, texts = space(
        [
            "lr=tag(log, interval(1e-4, 1e-2))",
            "batch=choice(64,128)",
            "depth=range(1,5)",
            "channels=choice([4,8],[8,16])",
            "experiment=fast",
            "+trainer.x=3",
        ]
    )
    d = optuna.distributions
    assert distributions == {
        "lr": d.FloatDistribution(1e-4, 1e-2, log=True),
        "batch": d.CategoricalDistribution([64, 128]),
        "depth": d.IntDistribution(1, 4),
        "channels": d.CategoricalDistribution(["[4,8]", "[8,16]"]),
    }
    assert fixed == ["experiment=fast", "+trainer.x=3"]
    trial = optuna.trial.FixedTrial({"batch": 128, "channels": "[8,16]", "lr": 0.001, "depth": 2})
    trial.suggest_categorical("batch", [64, 128]), trial.suggest_categorical("channels", ["[4,8]", "[8,16]"])
    trial.suggest_float("lr", 1e-4, 1e-2), trial.suggest_int("depth", 1, 4)
    assert Search.trial_overrides(trial, texts) == ["batch=128", "channels=[8,16]", "lr=0.001", "depth=2"]


@pytest.mark.parametrize(
    "line, says",
    [
        ("lr=interval(0.1, 0.01)", "lr=interval(0.1, 0.01): "),
        ("lr=tag(log, interval(0, 1))", "lr=tag(log, interval(0, 1)): "),
        ("lr=interval(1", "lr=interval(1: "),
    ],
)
def test_broken_space_names_the_setting(line, says):
    with pytest.raises(UserError, match="^error: search space: " + says.replace("(", r"\(").replace(")", r"\)")):
        space([line])


def test_fast_preset_is_a_search_of_the_fast_recipe():
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = hydra_compose("config", overrides=["hparams_search=fast"], return_hydra_config=True)
        settings = cfg.hydra.sweeper
        distributions, fixed, texts = space([f"{k}={v}" for k, v in settings.params.items()])
        assert {"experiment=fast", "trainer.max_epochs=12"} <= set(fixed) and len(distributions) == 5
        assert isinstance(build(settings, "sampler"), optuna.samplers.TPESampler)
        assert isinstance(build(settings, "pruner"), optuna.pruners.SuccessiveHalvingPruner)
        assert settings.objective == "valid_rmse_px" and settings.direction == "minimize"
        assert settings.storage == f"sqlite:///outputs/search/{settings.study_name}/optuna.db"
        # every option of the space composes with the preset's recipe, whose net it leaves alone
        recipe = hydra_compose("config", overrides=["experiment=fast"])
        for key, dist in distributions.items():
            for value in getattr(dist, "choices", None) or (dist.low, dist.high):
                trial = hydra_compose("config", overrides=[*fixed, f"{key}={value}"])
                assert OmegaConf.select(trial, key) == pytest.approx(value) and trial.net == recipe.net


LR = "optimizer.lr=interval(0.001,0.1)"


def run_search(tmp_path, launcher, n_trials, space=LR):
    """Search.run as the sweeper runs it, with a stand-in launcher."""
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = hydra_compose(
            "config",
            overrides=[
                "hydra/sweeper=optuna",
                "hydra.sweeper.study_name=s",
                "hydra.sweeper.n_jobs=-1",
                f"hydra.sweeper.n_trials={n_trials}",
                f"hydra.sweep.dir={tmp_path}/search",
            ],
            return_hydra_config=True,
        )
        return Search(cfg.hydra.sweeper, cfg, launcher, validate=lambda batch: None).run([space])


def test_ctrl_c_that_a_library_turns_into_another_error_still_stops_the_search(tmp_path):
    from hydra.core.utils import JobReturn, JobStatus

    class Launcher:  # Ctrl-C during the jobs, which a library turns into an AttributeError that fails them
        def launch(self, jobs, initial_job_idx):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except KeyboardInterrupt:
                error = AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'")
            returns = []
            for number in range(initial_job_idx, initial_job_idx + len(jobs)):
                out = tmp_path / "search" / f"{number}_all"
                out.mkdir(parents=True)
                (out / "error.txt").write_text(
                    f"job {number}: ...\n{error}\n"
                )  # as keypoints.sweeps.summary.SweepSummary writes it
                hydra = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(out)}}})
                returns.append(JobReturn(status=JobStatus.COMPLETED, hydra_cfg=hydra, _return_value=None))
            return returns

    previous = signal.signal(
        signal.SIGINT, signal.default_int_handler
    )  # as in a terminal, even under a runner that ignores it
    try:
        with pytest.raises(KeyboardInterrupt):
            run_search(tmp_path, Launcher(), n_trials=3)
    finally:
        signal.signal(signal.SIGINT, previous)
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/search/optuna.db").trials
    stopped, queued = trials[: -len(trials) // 2], trials[-len(trials) // 2 :]
    assert all(t.state == State.FAIL and t.user_attrs["interrupted"] for t in stopped)
    assert [t.state for t in queued] == [State.WAITING] * len(stopped)
    assert [t.params for t in stopped] == [
        {"optimizer.lr": t.system_attrs["fixed_params"]["optimizer.lr"]} for t in queued
    ]
    # their jobs are not counted failed (the study goes on with them), and the error is kept
    jobs = sorted((tmp_path / "search").glob("*_all"))
    assert len(jobs) == len(stopped) and not list((tmp_path / "search").rglob("error.txt"))
    assert all("_invalidate_flags_cache" in (job / "interrupted.txt").read_text() for job in jobs)


def test_search_asks_in_batches_and_the_same_command_continues_the_study(tmp_path):
    """The ask/launch/tell loop with a stand-in launcher whose jobs score their learning rate."""
    from hydra.core.utils import JobReturn, JobStatus

    class Launcher:
        def __init__(self):
            self.batches = []

        def launch(self, jobs, initial_job_idx):
            self.batches.append(len(jobs))
            returns = []
            for number, job in enumerate(jobs, initial_job_idx):
                out = tmp_path / "search" / f"{number}_all"
                out.mkdir(parents=True)
                lr = float(next(o for o in job if o.startswith("optimizer.lr=")).split("=")[1])
                (out / "metrics.json").write_text(json.dumps({"valid_rmse_px": lr}))
                hydra = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(out)}}})
                returns.append(JobReturn(status=JobStatus.COMPLETED, hydra_cfg=hydra, _return_value=lr))
            return returns

    def search(n_trials, space=LR):
        launcher = Launcher()
        return launcher.batches, run_search(tmp_path, launcher, n_trials, space)

    batches, best = search(5)  # n_jobs -1: as many at once as there are CPUs, as joblib reads it
    assert sum(batches) == 5 and max(batches) == min(5, os.cpu_count()) and batches[-1] >= 1
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/search/optuna.db")
    assert [t.state for t in study.trials] == [State.COMPLETE] * 5
    assert best.value == min(t.params["optimizer.lr"] for t in study.trials)
    assert search(5)[0] == []  # the study holds its 5 trials: nothing to run
    assert sum(search(7)[0]) == 2  # a larger n_trials searches on
    with pytest.raises(
        UserError, match="^error: hydra.sweeper.study_name=s: the study in .* was searched with other settings"
    ):
        search(9, space="optimizer.lr=interval(0.001,0.2)")  # another space: not mixed into this study
    preset = OmegaConf.load(tmp_path / "search" / "best.yaml")
    assert preset.defaults == ["default"] and preset.optimizer.lr == study.best_trial.params["optimizer.lr"]


def tiny_search(tmp_path, tiny_data, launcher):
    """A search of 4 trials of 3 epochs on tiny synthetic faces; trials whose max_lr is HOPELESS diverge
    at once, and a threshold pruner stops them."""
    sweep = tmp_path / "search"
    return sweep, [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        f"hydra/launcher={launcher}",
        "hydra/sweeper=optuna",
        "hydra.sweeper.study_name=tiny",
        "hydra.sweeper.n_trials=4",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.sampler._target_=optuna.samplers.RandomSampler",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.upper=100",
        *(["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []),
        "data=kaggle",
        f"data.dir={tiny_data}",
        f"paths.cache_dir={tmp_path}/cache",
        "trainer.max_epochs=3",
        "net=cnn_bn",
        "net.channels=[4,4,4,4]",
        "net.hidden=8",
        "trainer.enable_progress_bar=false",
        f"schedule.scheduler.max_lr=choice(0.003,{HOPELESS})",
        "optimizer.weight_decay=tag(log,interval(1e-5,1e-2))",
    ]


def load(sweep):
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{sweep}/optuna.db")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_search_prunes_survives_ctrl_c_resumes_and_prints_the_best_trial(tiny_data, tmp_path, launcher):
    sweep, command = tiny_search(tmp_path, tiny_data, launcher)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Ctrl-C once trials 0 and 1 have started (basic: 0 has ended), wherever it lands: the running
    # trials fail, and are queued for the next command.
    first = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # even where the runner ignores Ctrl-C
    deadline = time.time() + 120
    started = lambda: all((sweep / f"{n}_all" / "hparams.yaml").is_file() for n in (0, 1))  # written as fitting starts
    while not started() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    log = first.communicate(timeout=120)[0]
    assert first.returncode != 0 and "the same command continues the study" in log, log[-3000:]
    interrupted = [t for t in load(sweep).trials if t.user_attrs.get("interrupted")]
    assert interrupted and all(t.state == State.FAIL for t in interrupted)
    queued = [t.params for t in interrupted]

    # The same command continues the study: the interrupted trials' parameters first, then new ones.
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = load(sweep)
    told = [t for t in study.trials if not t.user_attrs.get("interrupted")]
    later = [t for t in told if t.number > max(i.number for i in interrupted)]
    assert len(told) == 4 and [t.params for t in later[: len(queued)]] == queued
    # Hopeless trials are recorded as pruned, not failed; the others complete with their objective.
    for t in told:
        hopeless = t.params["schedule.scheduler.max_lr"] == HOPELESS
        assert t.state == (State.PRUNED if hopeless else State.COMPLETE), (t.number, t.state, t.params)
        run = sweep / f"{t.number}_all"
        assert (run / "pruned.txt").is_file() == hopeless and (run / "metrics.json").is_file() == (not hopeless)
        if not hopeless:  # reported after each of its 3 epochs, and told its final objective
            assert sorted(t.intermediate_values) == [0, 1, 2]
            assert json.loads((run / "metrics.json").read_text())["valid_rmse_px"] == t.value
        # every trial is a TensorBoard run with its hyperparameters
        assert list(run.glob("events.out.tfevents.*"))
        assert OmegaConf.load(run / "hparams.yaml").schedule.scheduler.max_lr == t.params["schedule.scheduler.max_lr"]
    pruned, complete = (sum(t.state == s for t in told) for s in (State.PRUNED, State.COMPLETE))
    assert pruned and complete
    # The summary judges this command's jobs alone: the interrupted jobs' directories, of the first
    # command, are kept but not counted again.
    states = [t.state for t in later]
    assert (
        f"{len(later)} jobs in {sweep}: {states.count(State.COMPLETE)} completed, "
        f"{states.count(State.PRUNED)} pruned, 0 failed\n" in proc.stdout
    ), proc.stdout[-2000:]
    assert all((sweep / f"{t.number}_all" / ".hydra").is_dir() for t in interrupted)

    # The best trial, as a command and as a preset; the command trains exactly that trial again.
    best = study.best_trial
    assert f"best trial: {best.number}, valid_rmse_px {best.value:.4f}" in proc.stdout
    printed = proc.stdout.split(f"best trial: {best.number}")[1].splitlines()[1].strip()
    preset = (sweep / "best.yaml").read_text()
    assert f"# {printed}\n" in preset and printed.startswith("python train.py ") and "hydra" not in printed
    assert OmegaConf.load(sweep / "best.yaml").schedule.scheduler.max_lr == best.params["schedule.scheduler.max_lr"]
    assert {p.name for p in sweep.glob("*.png")} >= {"history.png", "importances.png"}
    again = subprocess.run(
        printed.replace("python", sys.executable, 1).replace("train.py", str(ROOT / "train.py"), 1)
        + f" hydra.run.dir={tmp_path}/again",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["valid_rmse_px"] == pytest.approx(
        best.value, rel=1e-3
    )

    # Run once more, the study is complete: nothing new runs.
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Launching" not in done.stdout + done.stderr
    assert len(load(sweep).trials) == len(study.trials)


@pytest.mark.parametrize(
    "override, says",
    [
        ("optimizer.lr=interval(1,0)", "error: search space: optimizer.lr=interval(1,0): "),
        ("optimizer.lrr=interval(0.1,1)", "error: search space: Could not override 'optimizer.lrr'"),
        (
            "hydra.sweeper.storage=sqlite:////nonexistent/dir/optuna.db",
            "error: hydra.sweeper.storage=sqlite:////nonexistent/dir/optuna.db: cannot open the study: ",
        ),
        (
            "hydra.sweeper.storage=postgresql://kfkd:secret@127.0.0.1:1/kfkd",
            "error: hydra.sweeper.storage=postgresql://kfkd:***@127.0.0.1:1/kfkd: cannot open the study: ",
        ),
        ("hydra.sweeper.objective=valid_accuracy", "error: hydra.sweeper.objective=valid_accuracy: a run reports "),
        ("hydra.sweeper.pruner._target_=optuna.pruners.NoSuchPruner", "error: hydra.sweeper.pruner: "),
    ],
)
def test_search_mistakes_are_one_line_errors_naming_the_setting(tmp_path, override, says):
    task = [] if override.startswith("hydra.") else [override]
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = hydra_compose(
            "config",
            overrides=[
                "hydra/sweeper=optuna",
                "hydra.sweeper.study_name=s",
                f"hydra.sweep.dir={tmp_path}/search",
                *([override] if not task else []),
            ],
            return_hydra_config=True,
        )
        compose_each = lambda batch: [hydra_compose("config", overrides=list(o)) for o in batch]  # as Hydra's sweeper
        launched = []
        with pytest.raises(UserError) as error:
            Search(
                cfg.hydra.sweeper, cfg, launcher=type("L", (), {"launch": launched.append}), validate=compose_each
            ).run(task)
    assert str(error.value).startswith(says) and "\n" not in str(error.value) and not launched
    assert "secret" not in str(error.value)


@pytest.mark.slow
def test_search_error_ends_the_command_with_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            "hparams_search=fast",
            "hydra.sweeper.objective=acc",
            f"hydra.sweep.dir={tmp_path}/search",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        "error: hydra.sweeper.objective=acc: a run reports train_loss, valid_loss, valid_rmse_px "
        "after each epoch, and valid_nme_pct, valid_failure_pct where it predicts its keypoint set's nme pair\n"
    ), proc.stderr[-3000:]


def test_the_search_can_minimise_the_nme_and_names_a_run_without_it():
    """Each epoch the trial is told the objective the sweeper names, valid_nme_pct as valid_rmse_px; a
    net without its set's nme pair (a specialist) has none, which is one line, not a KeyError."""
    from types import SimpleNamespace

    import torch
    from pytorch_lightning.trainer.states import TrainerFn

    from keypoints.core.errors import DataError
    from keypoints.sweeps.search import Pruning

    study = optuna.create_study()
    trial = study.ask()
    trainer = lambda metrics: SimpleNamespace(
        sanity_checking=False, state=SimpleNamespace(fn=TrainerFn.FITTING), current_epoch=3, callback_metrics=metrics
    )
    Pruning(trial, "valid_nme_pct", "sqlite://").on_validation_end(
        trainer({"valid_rmse_px": torch.tensor(2.0), "valid_nme_pct": torch.tensor(4.5)}), None
    )
    assert study.trials[0].intermediate_values == {3: 4.5}
    with pytest.raises(
        DataError,
        match=r"^hydra.sweeper.objective=valid_nme_pct: this run does not report it; "
        r"its keypoints lack the keypoint set's nme pair$",
    ):
        Pruning(trial, "valid_nme_pct", "sqlite://").on_validation_end(
            trainer({"valid_rmse_px": torch.tensor(2.0)}), None
        )
