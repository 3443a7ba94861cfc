"""Exceptions with messages that name the offending file/key and the fix."""


class ClsuiteError(Exception):
    """Base class: every error clsuite raises on bad input or state."""


class ParamsError(ClsuiteError):
    """params.yaml is malformed: the message names the key path and allowed values."""


class DataError(ClsuiteError):
    """A dataset file is missing, corrupt or has the wrong checksum/shape."""


class FetchError(DataError):
    """A dataset cannot be obtained; the message says what to download and where to put it."""


class SchemaError(ClsuiteError):
    """A table does not match its pandera schema; the message names the table and column."""


class RegistryError(ClsuiteError, KeyError):
    """An unknown name was looked up in a registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class RunFailed(ClsuiteError):
    """A training run stopped; ``status`` (method, experience, iteration, ...) goes into status.json."""

    def __init__(self, message: str, **status: object) -> None:
        super().__init__(message)
        self.status = status


class TrainingDiverged(RunFailed):
    """The loss or the model's outputs became non-finite; the run is marked diverged, not written."""


class ComponentError(RunFailed):
    """A method's plugin or a model raised or returned malformed output; the message names it and the hook."""


class ReportError(ClsuiteError):
    """A report cannot be built as asked (e.g. a figure it shows is missing); the message names the file and the fix."""


class RunFolderError(DataError):
    """A run folder is inconsistent (missing or foreign records, a finished status without its files)
    or in use by another process; the message names the folder, the file and the fix."""
