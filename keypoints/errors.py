"""The user's mistakes in files and settings, in a module that imports nothing heavy: `detect` on an
exported .onnx model reports them without torch installed."""


class DataError(ValueError):
    """A problem with the user's data files: the message names the file and what was expected."""
