"""Exceptions that carry a message for the user (printed by the CLI without a traceback)."""


class DifferlandError(Exception):
    """Base class of errors caused by user input: configs, stores, checkpoints, paths."""


class ConfigError(DifferlandError, ValueError):
    """A configuration that does not parse or validate; the message names the key."""


class DataValidationError(DifferlandError, ValueError):
    """A store or file that fails validation; the message lists every problem found."""

    def __init__(self, problems, source: str = ""):
        self.problems = list(problems) if not isinstance(problems, str) else [problems]
        head = f"{source}: " if source else ""
        super().__init__(head + f"{len(self.problems)} problem(s):\n  - " + "\n  - ".join(self.problems))


class CheckpointError(DifferlandError, ValueError):
    """A checkpoint that cannot be read, or is refused as unsafe."""


class StorageReadError(DifferlandError, OSError):
    """A read from the store that still failed after every retry."""


class StorageWriteError(DifferlandError, OSError):
    """An object that could not be written, or was stored with other bytes than those sent,
    after every retry; the message names the object."""


class TrainingDiverged(DifferlandError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class OutputMismatchError(DifferlandError):
    """An existing output was made from another network, store, series or model options."""
