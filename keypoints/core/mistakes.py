"""A user's mistake said in one line, `error: <file or setting>: <what>; <what to do>`, exit status 1.

Mistakes are the user's data (DataError), a run that cannot go on (RunError), a value the config
requires (MissingMandatoryValue), a setting a class rejected as it was built, and a command line that
Hydra cannot compose: an unknown setting or option gets the nearest of the config's own ("did you
mean"), not Hydra's advice to add it with `+`. Anything else is a bug and keeps its traceback, as
does every mistake with HYDRA_FULL_ERROR=1.
"""

from __future__ import annotations

import difflib
import os
import sys
import traceback
from contextlib import contextmanager

from hydra.errors import (
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

from keypoints.core.errors import DataError, RunError, UserError


def full_error() -> bool:
    """HYDRA_FULL_ERROR=1: the user asks for tracebacks."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def line(error: BaseException) -> str | None:
    """The one line that says the mistake `error`; None where it is no mistake of the user's."""
    if isinstance(error, UserError):  # said already
        return str(error)
    if isinstance(error, InstantiationException):  # a setting a class rejected while built
        error = error.__cause__
    if isinstance(error, (DataError, RunError)):
        return f"error: {str(error).splitlines()[0]}"
    if isinstance(error, MissingMandatoryValue):
        return f"error: {error.full_key}: not set; give it on the command line ({error.full_key}=...)"
    if isinstance(error, MissingConfigException) and "/" in (error.missing_cfg_file or ""):  # not the primary config
        return _no_option(error)
    if isinstance(error, ConfigCompositionException) and isinstance(
        error.__cause__, (ConfigKeyError, ConfigAttributeError)
    ):
        return _no_setting(error.__cause__)
    if isinstance(error, OverrideParseException):
        reason = next(text for text in error.message.splitlines() if not text.startswith("Error parsing"))
        return f"error: {error.override}: not an override ({reason}); write KEY=VALUE, as in kfkd train --help"
    if isinstance(error, ConfigCompositionException):
        said = [text.splitlines()[0] for text in (str(error), str(error.__cause__ or "")) if text]
        return f"error: {'; '.join(said)}"
    return None


def _no_option(error: MissingConfigException) -> str:
    """A group option that is not there: `net=cnnn` (options: those Hydra found on its search path)."""
    group, _, name = error.missing_cfg_file.rpartition("/")
    options = error.options
    if options is None:  # an option of a list (augment=[flip,afine]): Hydra names none
        from hydra.core.global_hydra import GlobalHydra

        options = GlobalHydra.instance().config_loader().get_group_options(group)
    near = difflib.get_close_matches(name, options, n=1)
    advice = f"did you mean {group}={near[0]}?" if near else f"the options are {', '.join(options)}"
    return f"error: {group}={name}: no such option; {advice}"


def _no_setting(error: ConfigKeyError | ConfigAttributeError) -> str:
    """A setting the config does not have: `trainer.max_epoch=3`, with the nearest of its keys."""
    config = OmegaConf.to_container(error.parent_node._get_root(), resolve=False)
    near = difflib.get_close_matches(error.full_key, list(_keys(config)), n=1)
    advice = f"did you mean {near[0]}?" if near else "to add a setting of your own, write the override as +KEY=VALUE"
    return f"error: {error.full_key}: no such setting; {advice}"


def _keys(node, prefix: str = ""):
    """Every setting of a config (as containers), dotted: trainer, trainer.max_epochs, ..."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{prefix}{key}"
            yield from _keys(value, f"{prefix}{key}.")


def stop(error: BaseException, said: str) -> None:
    """End the command at the mistake `error`: its line `said`, or with HYDRA_FULL_ERROR=1 its traceback."""
    if full_error():
        traceback.print_exception(error)
    else:
        print(said, file=sys.stderr)
    sys.exit(1)


@contextmanager
def stopping():
    """A mistake raised inside ends the command (`stop`); anything else goes on up."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - sorted by `line`
        said = line(e)
        if said is None:
            raise
        stop(e, said)


@contextmanager
def hydra_mistakes_in_one_line():
    """While Hydra runs a command, a mistake it meets composing the config (an override, a group's
    option) ends the command in one line: Hydra 1.3 has no hook for its report (the message, a hint
    to add `+`, a line about HYDRA_FULL_ERROR), so its run_and_report is wrapped meanwhile. A
    SystemExit passes through Hydra's report untouched."""
    from hydra._internal import utils

    report = utils.run_and_report

    def run_and_report(func):
        def run():
            with stopping():
                return func()

        return report(run)

    utils.run_and_report = run_and_report
    try:
        yield
    finally:
        utils.run_and_report = report
