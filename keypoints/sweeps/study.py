"""The study that a search's workers share: opened in any SQLAlchemy storage by as many workers as
there are, on as many machines (hydra.sweeper.storage, conf/hydra/sweeper/optuna.yaml).

- Workers that open an empty database at once race to create its tables (Optuna's issue #1092): the
  losers try again, and find them.
- Each trial's draws come from a sampler seeded by the configured seed and the trial's number, so that
  workers seeded alike never draw the same parameters.
- A worker beats Optuna's heartbeat for the trials it runs; when it dies, another fails them after
  grace_period and queues their parameters again (what `study.optimize` does, for kfkd's ask/tell loop).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
from contextlib import contextmanager

from hydra.utils import instantiate
from omegaconf import DictConfig

from keypoints.core.errors import UserError

log = logging.getLogger(__name__)


def build(settings: DictConfig, key: str, **kwargs):
    """The sampler, pruner or importance evaluator of hydra.sweeper.KEY; a broken one is a one-line error."""
    try:
        return instantiate(settings[key], **kwargs)
    except Exception as e:  # Hydra wraps the cause: a missing class, a wrong argument
        cause = e.__cause__ or e
        raise UserError(f"error: hydra.sweeper.{key}: {str(cause).strip().splitlines()[0]}") from None


def open_study(settings: DictConfig, sampler=None):
    """(study, storage): the study of hydra.sweeper.study_name in hydra.sweeper.storage, created if new,
    with Optuna's heartbeat (hydra.sweeper.heartbeat) so that a trial whose worker died is failed and
    run again."""
    import optuna

    try:
        storage = rdb_storage(settings)
        return optuna.create_study(
            study_name=settings.study_name,
            storage=storage,
            sampler=sampler,
            pruner=build(settings, "pruner"),
            direction=settings.direction,
            load_if_exists=True,
        ), storage
    except UserError:
        raise
    except Exception as e:  # no driver, no server, no such directory, a malformed URL
        raise UserError(
            f"error: hydra.sweeper.storage={shown(settings.storage)}: cannot open the study: "
            f"{str(e).strip().splitlines()[0] or type(e).__name__}"
        ) from None


def rdb_storage(settings: DictConfig, attempts: int = 5):
    """Optuna's RDBStorage of hydra.sweeper.storage. Workers that open an empty database at the same time
    race to create its tables, and all but one fail (Optuna's issue #1092); those try again, and find them."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # Optuna marks its heartbeat's retry callback experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(settings.storage, **instantiate(settings.heartbeat))
        except (IntegrityError, ProgrammingError):  # a table or type that another worker created meanwhile
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.1, 0.5))


def shown(url: str) -> str:
    """A storage URL as messages show it: without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: shown as given
        return url


def seeded_per_trial(settings: DictConfig):
    """hydra.sweeper.sampler, seeded anew for each trial from its `seed` and the trial's number, which the
    storage hands out once: workers sharing a study never draw the same parameters (a sampler seeded
    once per worker would draw the same sequence in each), and a search of one worker draws as its seed
    says. Without a seed, the sampler as configured."""
    import numpy as np
    from optuna.samplers import BaseSampler

    if settings.sampler.get("seed") is None:
        return build(settings, "sampler")

    class SeededPerTrial(BaseSampler):
        def __init__(self):
            self.sampler = build(settings, "sampler")

        def before_trial(self, study, trial):
            seed = np.random.SeedSequence([settings.sampler.seed, trial.number]).generate_state(1)[0]
            self.sampler = build(settings, "sampler", seed=int(seed))
            self.sampler.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.sampler.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.sampler.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.sampler.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values):
            self.sampler.after_trial(study, trial, state, values)

    return SeededPerTrial()


@contextmanager
def heartbeats(storage, study, trials):
    """Optuna's heartbeat for trials run outside `study.optimize`, as kfkd's are: recorded every
    heartbeat_interval while they run, so that when this worker dies another fails them. The same thread
    fails other workers' trials whose heartbeat stopped, as soon as their grace period ends, not only
    when this worker is between trials. A beat that the database does not answer is skipped: the
    sweeper's own call names a lost database (keypoints/sweeps/storage.py)."""
    study_id, stop = storage.get_study_id_from_name(study.study_name), threading.Event()
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials]

    def beat():
        while True:
            try:
                for trial_id in ids:
                    storage.record_heartbeat(trial_id)
                fail_stale_trials(study)
            except Exception:  # the database lost, or busy: the next beat tries again
                pass
            if stop.wait(storage.heartbeat_interval):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study) -> None:
    """Fail the trials whose worker stopped beating for grace_period (its heartbeat_stale_trial_callback
    queues their parameters again): what `study.optimize` does before each trial. Each retry is announced."""
    import optuna

    with warnings.catch_warnings():  # experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        before = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
    if not before:
        return
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        failed = trial.system_attrs.get("failed_trial")
        if failed in before:
            log.warning(
                f"trial {failed} failed: its worker stopped beating (hydra.sweeper.heartbeat.grace_period); "
                f"its parameters run again as trial {trial.number}"
            )
