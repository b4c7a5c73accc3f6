"""The user's mistakes in files and settings, and runs that cannot go on, in a module that imports
nothing heavy: `detect` on an exported .onnx model reports them without torch installed."""

from hydra.errors import CompactHydraException


class DataError(ValueError):
    """A problem with the user's data files: the message names the file and what was expected."""


class RunError(RuntimeError):
    """A run that cannot start or go on: the message says why and what to do instead."""


class UserError(CompactHydraException):
    """A mistake the user can fix: Hydra prints the message alone, no traceback, and exits 1."""


class SlurmJobLost(CompactHydraException):
    """A Slurm job that ended without its run's own result: cancelled, killed, or failed outside the run."""
