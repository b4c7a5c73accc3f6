"""A study's database lost in the middle of a search: one line that names it, and nothing lost.

Every use of the study goes through `guard`: a lost connection (the server stopped, the network gone)
becomes StorageLost, one line naming the storage and what the driver said, in place of Optuna's
StorageInternalError, which blames "invalid data in the commit". A lost connection is the only error it
translates: any other is the search's own and stays as it was.

The job keeps training when its reports fail (keypoints.sweeps.search.Pruning): its metrics.json and
checkpoints are the user's work and need no database; only the pruner goes without its numbers. The
sweeper, when it cannot tell the study how its trials ended, notes them in LOST (the sweep directory)
and stops, printing the command to run again. That command, once the database answers, fails the noted
trials still RUNNING and queues their parameters again, as Ctrl-C's trials are: the study goes on as
it was, without waiting for their heartbeats' grace period.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

from keypoints.core.errors import UserError

log = logging.getLogger(__name__)
LOST = "lost_trials.json"  # in the sweep directory: the trials whose end the study never heard of


class StorageLost(UserError):
    """The connection to the study's database was lost."""


def lost_connection(error: BaseException) -> str | None:
    """What the driver said, where `error` (or an error it was raised from) is a lost or refused
    connection to the database; else None."""
    from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

    cause = error
    while cause is not None:
        if isinstance(cause, (OperationalError, InterfaceError, DisconnectionError)) or (
            isinstance(cause, DBAPIError) and cause.connection_invalidated
        ):
            said = str(getattr(cause, "orig", None) or cause).strip().splitlines()
            return said[0] if said else type(cause).__name__
        cause = cause.__cause__ or cause.__context__
    return None


@contextmanager
def guard(storage: str):
    """Study calls inside raise StorageLost, naming `storage` (shown without its password), where the
    connection to its database is lost."""
    from keypoints.sweeps.study import shown

    try:
        yield
    except StorageLost:
        raise
    except Exception as e:
        said = lost_connection(e)
        if said is None:
            raise
        raise StorageLost(
            f"error: hydra.sweeper.storage={shown(storage)}: lost the connection to the study's database ({said})"
        ) from None


def rerun() -> str:
    """The command line that started this process, to run again, with the storage's password hidden
    (a log is no place for it: put it back, or give it as PGPASSWORD)."""
    from keypoints.sweeps.study import shown

    key = "hydra.sweeper.storage="
    args = [key + shown(a[len(key) :]) if a.startswith(key) else a for a in sys.argv]
    return shlex.join((["python"] if args[0].endswith(".py") else []) + args)


def note(sweep: Path, study_name: str, numbers: list[int], lost: StorageLost) -> StorageLost:
    """Note the trials whose end the study did not hear (in SWEEP/LOST) and return the one-line error
    that says so, with the command to run again."""
    path = sweep / LOST
    noted = json.loads(path.read_text()) if path.is_file() else {}
    noted[study_name] = sorted(set(noted.get(study_name, [])) | set(numbers))
    path.write_text(json.dumps(noted))
    trials = f"trial(s) {', '.join(map(str, numbers))} fail and run again" if numbers else "the search goes on"
    return StorageLost(f"{lost}; once it answers, {trials} with the same command: {rerun()}")


def fail_noted(study, storage, sweep: Path) -> None:
    """The trials an earlier command noted as lost with the database (`note`): those still RUNNING
    fail, and their parameters are queued again."""
    import optuna

    path = sweep / LOST
    noted = json.loads(path.read_text()) if path.is_file() else {}
    numbers = noted.pop(study.study_name, [])
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    study_id = storage.get_study_id_from_name(study.study_name)
    for number in numbers:
        trial = trials.get(number)
        if trial is None or trial.state != optuna.trial.TrialState.RUNNING:  # e.g. failed by another worker
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        storage.set_trial_user_attr(trial_id, "interrupted", True)  # not counted: its parameters run again
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params)
        log.warning(f"trial {number} failed: the study's database was lost while it ran; its parameters run again")
    if numbers:
        path.write_text(json.dumps(noted)) if noted else path.unlink()
