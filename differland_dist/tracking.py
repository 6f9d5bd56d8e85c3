"""Optional experiment tracking: a calibration hook that logs metrics to TensorBoard.

``calibrate(config, out, hooks=[TensorBoardHook(logdir)])`` writes every record of
``metrics.jsonl`` as TensorBoard scalars, under ``<split>/<key>`` (``train/loss``,
``dev/loss``, ``train/lai`` ...), at the record's step. It needs the ``tensorboardX`` package
(the ``[tracking]`` extra; no TensorFlow): without it, constructing the hook raises a
:class:`~differland_dist.errors.DifferlandError` that says how to install it, before any
training starts. Event files are written to a local directory (TensorBoard's own format).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from differland_dist.errors import DifferlandError

log = logging.getLogger(__name__)

#: Record fields that are bookkeeping, not metrics.
_NOT_SCALARS = {"step", "split", "applied"}


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric fields of a metrics record (``terms`` flattened), by name."""
    flat = {k: v for k, v in record.items() if k != "terms"}
    if isinstance(record.get("terms"), dict):
        flat.update(record["terms"])
    return {k: float(v) for k, v in flat.items()
            if k not in _NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v))}


class TensorBoardHook:
    """A calibration hook ``(step, calibration) -> None`` that logs each new record of
    ``calibration.metrics`` once (records of resumed runs that were logged before are not
    repeated; held-out records, added after the step's hook call, go out on the next call or
    on :meth:`close`). Use as a context manager or call :meth:`close` at the end."""

    def __init__(self, logdir: str, flush_secs: int = 30):
        # imported here: tensorboardX is optional (the [tracking] extra); a missing one is a clear error
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise DifferlandError("--tensorboard needs the tensorboardX package: pip install "
                                  "'differland_dist[tracking]'") from None
        if "://" in logdir and not logdir.startswith("file://"):
            raise DifferlandError(f"--tensorboard {logdir}: give a local directory "
                                  "(event files are appended to as training runs)")
        self.logdir = logdir
        os.makedirs(logdir, exist_ok=True)
        self.writer = SummaryWriter(logdir=logdir, flush_secs=flush_secs)
        self._logged: set[tuple[str, int]] = set()
        self._calibration = None

    def __call__(self, step: int, calibration) -> None:
        self._calibration = calibration
        self._log_new(calibration.metrics)

    def _log_new(self, records) -> None:
        for rec in records:
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                continue
            key = (str(rec.get("split", "train")), int(rec["step"]))
            if key in self._logged:
                continue
            self._logged.add(key)
            for name, value in _scalars(rec).items():
                self.writer.add_scalar(f"{key[0]}/{name}", value, key[1])

    def close(self) -> None:
        """Log the records added since the last step (final held-out metrics), then flush."""
        if self._calibration is not None:
            self._log_new(self._calibration.metrics)
        self.writer.close()

    def __enter__(self) -> "TensorBoardHook":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
