"""Hyperparameter search with Optuna: a study driven by a Hydra sweeper, whose trials are pruned.

    python train.py -m hparams_search=fast [overrides]

The sweeper (`hydra/sweeper=optuna`: conf/hydra/sweeper/optuna.yaml, entry point in hydra_plugins/)
asks the study for `n_jobs` trials at a time, runs each as a job of the launcher with the trial's
parameters as overrides, and tells the study how it ended: its objective from metrics.json, pruned,
or failed. In the job, a Lightning callback reports the objective to the trial after every epoch
and stops the trial when the study's pruner gives up on it. The study lives in `storage` (SQLite in the
sweep directory by default), so the same command continues it; Ctrl-C fails only the running trials,
which the next command runs first. Several commands, on several machines, can search one study in a
database server (keypoints/sweeps/study.py): each takes trials until the study holds `n_trials`, then waits
for the others' running trials. At the end the sweep directory holds best.yaml (the best trial as a
preset), the plots, and the command that trains the best configuration is printed.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.trainer.states import TrainerFn

from keypoints.core.errors import DataError, UserError
from keypoints.sweeps.storage import StorageLost, fail_noted, guard, note
from keypoints.sweeps.study import build, fail_stale_trials, heartbeats, open_study, seeded_per_trial, shown
from keypoints.training.callbacks import History

log = logging.getLogger(__name__)
SCALARS = (bool, int, float, str, type(None))  # what Optuna can store as a categorical choice
OWN_GROUP = "hparams_search"  # the preset that starts a search; the best trial's command runs without it


def space(overrides: list[str]) -> tuple[dict, list[str], dict[str, dict]]:
    """The search space from overrides in Hydra's sweep syntax: (Optuna distributions by key, the fixed
    overrides, and for each categorical key its choices' override text by choice)."""
    import optuna.distributions as d

    distributions, fixed, texts = {}, [], {}
    for line in overrides:
        try:
            (override,) = OverridesParser.create().parse_overrides([line])
            if not override.is_sweep_override():
                fixed.append(line)
                continue
            key, value = override.get_key_element(), override.value()
            if override.is_choice_sweep():
                pairs = list(zip(override.sweep_iterator(), override.sweep_string_iterator()))
                # Lists and dicts are stored as their override text: Optuna keeps only scalars.
                choices = [v if isinstance(v, SCALARS) else s for v, s in pairs]
                texts[key] = dict(zip(choices, (s for _, s in pairs)))
                distributions[key] = d.CategoricalDistribution(choices)
            elif override.is_range_sweep():
                values = list(override.sweep_iterator())
                kind = d.IntDistribution if all(isinstance(v, int) for v in values) else d.FloatDistribution
                distributions[key] = kind(values[0], values[-1], step=value.step)
            else:  # interval(low, high), with tag(log, ...) for a log scale
                distributions[key] = d.FloatDistribution(value.start, value.end, log="log" in value.tags)
        except (HydraException, ValueError, TypeError, IndexError) as e:
            raise UserError(
                f"error: search space: {line}: {str(e).strip().splitlines()[0] or type(e).__name__}"
            ) from None
    return distributions, fixed, texts


class Pruning(pl.Callback):
    """Reports the objective to the trial after every epoch's validation and raises optuna.TrialPruned
    when the study's pruner stops the trial: what optuna-integration's PyTorchLightningPruningCallback
    does (single-device), for the standalone pytorch_lightning package (README: Hyperparameter search)."""

    def __init__(self, trial, monitor: str, storage: str):
        self.trial, self.monitor, self.storage = trial, monitor, storage
        self.lost = False  # the study's database was lost: no more reports

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:  # not fit.py's final validation
            return
        import optuna

        epoch = trainer.current_epoch
        if self.monitor not in trainer.callback_metrics:  # valid_nme_pct of a net without the set's nme pair
            raise DataError(
                f"hydra.sweeper.objective={self.monitor}: this run does not report it; its keypoints "
                f"lack the keypoint set's nme pair"
            )
        if self.lost:
            return
        try:
            with guard(self.storage):
                self.trial.report(trainer.callback_metrics[self.monitor].item(), step=epoch)
                prune = self.trial.should_prune()
        except StorageLost as lost:  # the run is the user's work: it trains on, unpruned (keypoints/sweeps/storage.py)
            self.lost = True
            log.warning(f"{str(lost).removeprefix('error: ')}; trial {self.trial.number} trains on without the pruner")
            return
        if prune:
            raise optuna.TrialPruned(f"Trial {self.trial.number} was pruned at epoch {epoch}.")


def pruning() -> list[Pruning]:
    """In a job of a search, the callback that reports each epoch to the study's pruner; else none."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or HydraConfig.get().sweeper.get("trial") is None:
        return []
    import optuna

    settings = HydraConfig.get().sweeper
    try:
        with guard(settings.storage):
            storage = optuna.storages.get_storage(settings.storage)
            study_id = storage.get_study_id_from_name(settings.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, settings.trial)
            study = optuna.load_study(study_name=settings.study_name, storage=storage, pruner=build(settings, "pruner"))
    except StorageLost as lost:  # as when it is lost later: the run trains, unpruned
        log.warning(f"{str(lost).removeprefix('error: ')}; trial {settings.trial} trains without the pruner")
        return []
    return [Pruning(optuna.trial.Trial(study, trial_id), settings.objective, settings.storage)]


def command(overrides: list[str]) -> str:
    """The shell command that trains one run with these overrides."""
    return " ".join(["python train.py", *(shlex.quote(o) for o in overrides)])


def preset(overrides: list[str], choices: DictConfig, header: str) -> str:
    """The overrides as an experiment preset (conf/experiment/NAME.yaml): config groups in its defaults
    list, values in its body."""
    defaults, body = [choices.experiment], OmegaConf.create()  # the preset it builds on, as default.yaml does
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key == "experiment":
            defaults[0] = override.value()
        elif key in choices:
            defaults.append({f"override /{key}": override.value()})
        else:
            OmegaConf.update(body, key, override.value(), force_add=True)
    text = OmegaConf.to_yaml(OmegaConf.create({"defaults": defaults, **OmegaConf.to_container(body)}))
    return f"# @package _global_\n{header}{text}"


def replace(path: Path, write) -> None:
    """write(a temporary path), then rename it over `path`: workers that write the same file at once
    leave one whole copy, never a mix."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    write(partial)
    os.replace(partial, path)


def plots(study, sweep: Path, evaluator) -> list[Path]:
    """Optuna's matplotlib plots of the study, as PNGs in the sweep directory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as ov

    written = []
    for name, plot in [
        ("history", ov.plot_optimization_history),
        ("intermediate_values", ov.plot_intermediate_values),
        ("importances", lambda s: ov.plot_param_importances(s, evaluator=evaluator)),
    ]:
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", ExperimentalWarning)
                figure = plot(study).figure
        except Exception as e:  # e.g. importances need two completed trials that differ
            log.warning(f"{name}.png not drawn: {str(e).strip().splitlines()[0]}")
            continue
        figure.set_size_inches(9, 6)
        figure.tight_layout()
        replace(sweep / f"{name}.png", lambda path: figure.savefig(path, dpi=100, format="png"))  # noqa: B023 - called at once
        plt.close(figure)
        written.append(sweep / f"{name}.png")
    return written


@contextmanager
def noting_ctrl_c():
    """Ctrl-C raises KeyboardInterrupt as usual, and is noted: one that lands in library code can come
    out of a job as another error, and the search must stop all the same."""
    previous, pressed = signal.getsignal(signal.SIGINT), []

    def note(signum, frame):
        pressed.append(signum)
        signal.default_int_handler(signum, frame)

    if previous is signal.default_int_handler:  # not where Ctrl-C is ignored or handled otherwise
        signal.signal(signal.SIGINT, note)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def set_aside_errors(returns) -> None:
    """Jobs failed by a Ctrl-C turned into another error are queued again, not failed: their error.txt
    becomes interrupted.txt, so the sweep's summary counts them unfinished and does not exit 1 for them."""
    for ret in returns:
        error = Path(ret.hydra_cfg.hydra.runtime.output_dir) / "error.txt"
        if error.is_file():
            error.rename(error.with_name("interrupted.txt"))


class Search:
    """The sweep of kfkd's Optuna sweeper: ask, launch, tell, until the study holds n_trials trials."""

    def __init__(self, settings: DictConfig, config: DictConfig, launcher, validate):
        self.settings, self.config, self.launcher, self.validate = settings, config, launcher, validate
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def run(self, arguments: list[str]):
        settings = self.settings
        if settings.objective not in History.KEYS:
            raise UserError(
                f"error: hydra.sweeper.objective={settings.objective}: a run reports "
                f"{', '.join(History.KEYS[:3])} after each epoch, and {', '.join(History.KEYS[3:])} "
                f"where it predicts its keypoint set's nme pair"
            )
        # The command line's sweeps join the space; its plain overrides, and the preset's params it does
        # not override, go to every trial.
        given = {o.key_or_group for o in OverridesParser.create().parse_overrides(arguments)}
        params = [f"{k}={v}" for k, v in (settings.params or {}).items() if k not in given]
        distributions, fixed, texts = space(params + arguments)
        try:  # a key or option the config does not have, before any trial is spent on it
            self.validate(
                [fixed + [f"{k}={texts[k][v.choices[0]] if k in texts else v.low}" for k, v in distributions.items()]]
            )
        except HydraException as e:
            raise UserError(f"error: search space: {str(e).strip().splitlines()[0]}") from None
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        study, storage = open_study(settings, sampler=seeded_per_trial(settings))
        self.untold = []  # trials launched whose end the study has not heard yet
        try:
            with guard(settings.storage):
                return self.search(study, storage, fixed, distributions, texts)
        except StorageLost as lost:
            raise note(self.sweep_dir, study.study_name, [t.number for t in self.untold], lost) from None

    def search(self, study, storage, fixed: list[str], distributions: dict, texts: dict[str, dict]):
        """Ask, launch and tell until the study holds n_trials trials; then the report."""
        import optuna

        settings = self.settings
        fail_noted(study, storage, self.sweep_dir)  # trials an earlier command lost with the database
        self.check_same_search(study, fixed, distributions)
        # joblib's convention: -1 is every CPU, -2 all but one...
        n_jobs = settings.n_jobs if settings.n_jobs > 0 else max(1, os.cpu_count() + 1 + settings.n_jobs)
        waited = None
        while True:
            fail_stale_trials(study)  # trials of workers that died, queued again
            held = self.held(study)
            batch = min(n_jobs, settings.n_trials - len(held))
            if batch <= 0:
                # Other workers' trials still run: one may fail and be queued again, and the report waits for them
                running = [t.number for t in held if t.state == optuna.trial.TrialState.RUNNING]
                if not running:
                    break
                if running != waited:
                    log.info(
                        f"waiting for trial(s) {', '.join(map(str, running))} of other workers (one whose worker "
                        f"died fails after hydra.sweeper.heartbeat.grace_period)"
                    )
                    waited = running
                time.sleep(min(storage.heartbeat_interval or 10, 10))
                continue
            with warnings.catch_warnings():  # heartbeats are ours (`heartbeats`), not study.optimize's
                warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
                trials = self.untold = [study.ask(distributions) for _ in range(batch)]
            jobs = [fixed + self.trial_overrides(t, texts) + [f"hydra.sweeper.trial={t.number}"] for t in trials]
            try:
                with heartbeats(storage, study, trials), noting_ctrl_c() as pressed:
                    returns = self.launcher.launch(jobs, initial_job_idx=trials[0].number)
                if pressed:  # a library turned the KeyboardInterrupt into another error, which failed the job
                    set_aside_errors(returns)
                    raise KeyboardInterrupt
            except BaseException as stop:
                self.give_back(study, trials, stop)
                raise
            for trial, ret in zip(trials, returns):
                self.tell(study, trial, ret)
                self.untold = self.untold[1:]
        return self.report(study, texts)

    @staticmethod
    def held(study) -> list:
        """The trials that count towards n_trials: finished or running, but not those whose parameters were
        queued again (stopped by Ctrl-C, or failed with their worker: `retry_history`)."""
        import optuna

        State = optuna.trial.TrialState
        trials = study.get_trials(deepcopy=False)
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
        return [
            t
            for t in trials
            if t.state in (State.COMPLETE, State.PRUNED, State.FAIL, State.RUNNING)
            and not t.user_attrs.get("interrupted")
            and t.number not in retried
        ]

    def check_same_search(self, study, fixed: list[str], distributions: dict) -> None:
        """A study continues only with the same fixed overrides and space: else its trials would not compare."""
        import optuna.distributions as d

        search = {
            "fixed": sorted(fixed),
            "space": {k: d.distribution_to_json(v) for k, v in sorted(distributions.items())},
        }
        known = study.user_attrs.get("search")
        if known is None:
            study.set_user_attr("search", search)
        elif known != search:
            changed = sorted(set(map(str, known["fixed"])) ^ set(search["fixed"])) or sorted(
                set(known["space"].items()) ^ set(search["space"].items())
            )
            raise UserError(
                f"error: hydra.sweeper.study_name={study.study_name}: the study in {shown(self.settings.storage)} "
                f"was searched with other settings ({' '.join(map(str, changed[:2]))}...); choose another "
                f"study_name or hydra.sweep.dir"
            )

    @staticmethod
    def trial_overrides(trial, texts: dict[str, dict]) -> list[str]:
        return [f"{k}={texts[k][v] if k in texts else v}" for k, v in trial.params.items()]

    def give_back(self, study, trials, stop: BaseException) -> None:
        """Ctrl-C, SIGTERM or a crash of the launcher: the batch's trials fail, and are queued again."""
        import optuna

        for trial in trials:
            trial.set_user_attr("interrupted", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params)
        log.warning(
            f"{type(stop).__name__}: trial(s) {', '.join(str(t.number) for t in trials)} stopped; the same "
            f"command continues the study, with them first"
        )

    def tell(self, study, trial, ret) -> None:
        import optuna
        from hydra.core.utils import JobStatus

        outcome = ret._return_value  # `return_value` re-raises a failed job's exception
        if ret.status == JobStatus.FAILED and isinstance(outcome, optuna.TrialPruned):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return
        metrics = Path(ret.hydra_cfg.hydra.runtime.output_dir) / "metrics.json"
        if ret.status == JobStatus.COMPLETED and metrics.is_file():
            study.tell(trial, json.loads(metrics.read_text())[self.settings.objective])
        else:  # the job's error is in its error.txt (keypoints.sweeps.summary.SweepSummary)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def report(self, study, texts: dict[str, dict]):
        """The best trial as a command and as a preset, and the plots; the best trial (None if none completed).
        Both are written from the study alone (its fixed overrides and the trial's parameters, each in
        order of their keys), so that every worker of a shared study writes the same."""
        import optuna

        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            log.warning(f"study {study.study_name}: no trial has completed yet")
            return None
        best = study.best_trial
        overrides = [o for o in study.user_attrs["search"]["fixed"] if o.split("=", 1)[0] != OWN_GROUP]
        overrides += sorted(self.trial_overrides(best, texts))
        run = command(overrides)
        header = (
            f"# The best trial ({best.number}, {self.settings.objective} {best.value:.4g}) of study "
            f"{study.study_name} in {shown(self.settings.storage)}.\n# Copy it to conf/experiment/NAME.yaml and train "
            f"it with `python train.py experiment=NAME`, or run:\n# {run}\n"
        )
        text = preset(overrides, self.config.hydra.runtime.choices, header)
        replace(self.sweep_dir / "best.yaml", lambda path: path.write_text(text))
        pictures = plots(study, self.sweep_dir, build(self.settings, "importance"))
        print(
            f"best trial: {best.number}, {self.settings.objective} {best.value:.4f}\n  {run}\n"
            f"preset: {self.sweep_dir / 'best.yaml'}\nplots: {' '.join(str(p) for p in pictures)}\n"
            f"runs: tensorboard --logdir {self.sweep_dir}"
        )
        return best
