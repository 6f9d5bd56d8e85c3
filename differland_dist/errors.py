"""Every exception class of the package: those that carry a message for the user (printed by
the CLI without a traceback; ``DifferlandError`` and its subclasses) and the storage layer's
internal signal ``StoredBytesMismatch``."""


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


class CorruptChunkError(DataValidationError):
    """A chunk object that is there but cannot be decoded: truncated, a damaged compressed
    frame, or bytes that do not match their crc32c checksum.

    Attributes: ``var``, ``key`` (e.g. ``t_min/c/1/0``), ``where`` (its pixel/time range),
    ``why``, and ``problem``, the one-line message."""

    def __init__(self, var: str, key: str, where: str, why: str, source: str = ""):
        self.var, self.key, self.where, self.why = var, key, where, why
        self.problem = f"{var}: chunk {key} is corrupt ({where}): {why}"
        super().__init__([self.problem], source=source)


class LeaseHeld(DifferlandError):
    """Another process holds the lease (or a stale lease needs ``force``)."""


class LeaseLost(DifferlandError):
    """Our lease was taken over or could not be renewed; stop writing."""


class WorkersLost(DifferlandError):
    """Workers kept dying beyond ``ray.max_worker_restarts``."""


class StoredBytesMismatch(OSError):
    """An uploaded object whose stored size or checksum is not that of the bytes sent."""
