"""Optional experiment tracking: calibration hooks that log metrics to TensorBoard or MLflow.

``calibrate(config, out, hooks=[TensorBoardHook(logdir)])`` writes every record of
``metrics.jsonl`` as TensorBoard scalars, under ``<split>/<key>`` (``train/loss``,
``dev/loss``, ``train/lai`` ...), at the record's step. It needs the ``tensorboardX`` package
(the ``[tracking]`` extra; no TensorFlow): without it, constructing the hook raises a
:class:`~differland_dist.errors.DifferlandError` that says how to install it, before any
training starts. Event files are written to a local directory (TensorBoard's own format).

``MLflowHook(tracking_uri, experiment)`` logs the same records as MLflow metrics (same names,
``train/loss`` ...) of one MLflow run, and the calibration config (credentials scrubbed) as its
parameters. It needs ``mlflow-skinny`` or ``mlflow`` (the ``[mlflow]`` extra); the tracking URI
is any MLflow accepts: a tracking server (``http://host:5000``), a database
(``sqlite:///mlflow.db``, with the full ``mlflow`` package) or a local directory
(``file:./mlruns``, which MLflow 3 accepts only with ``MLFLOW_ALLOW_FILE_STORE=true``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

from differland_dist.errors import DifferlandError
from differland_dist.storage.secrets import safe_config_dict

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


class RecordHook:
    """A calibration hook ``(step, calibration) -> None`` that hands each new record of
    ``calibration.metrics`` to :meth:`write` once (held-out records, added after the step's
    hook call, go out on the next call or on :meth:`close`). Use as a context manager or call
    :meth:`close` at the end."""

    def __init__(self):
        self._logged: set[tuple[str, int]] = set()
        self._calibration = None

    def write(self, split: str, step: int, scalars: dict[str, float]) -> None:
        """Send one record's scalars; each back-end (TensorBoard, MLflow) defines it."""
        raise TypeError(f"{type(self).__name__} defines no write(): subclass RecordHook")

    def start(self, calibration) -> None:
        """Called once, with the calibration, before its first record is written."""

    def __call__(self, step: int, calibration) -> None:
        if self._calibration is None:
            self.start(calibration)
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
            self.write(key[0], key[1], _scalars(rec))

    def flush_pending(self) -> None:
        """Log the records added since the last step (final held-out metrics)."""
        if self._calibration is not None:
            self._log_new(self._calibration.metrics)

    def close(self) -> None:
        self.flush_pending()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TensorBoardHook(RecordHook):
    """Each metrics record as TensorBoard scalars ``<split>/<key>`` at the record's step
    (records of resumed runs that were logged before are not repeated)."""

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
        super().__init__()
        self.logdir = logdir
        os.makedirs(logdir, exist_ok=True)
        self.writer = SummaryWriter(logdir=logdir, flush_secs=flush_secs)

    def write(self, split: str, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        """Log the records added since the last step (final held-out metrics), then flush."""
        self.flush_pending()
        self.writer.close()


def flat_params(d: Any, prefix: str = "") -> dict[str, str]:
    """A nested config dict as ``{"training.steps": "100", ...}`` (MLflow parameters)."""
    if isinstance(d, dict):
        out: dict[str, str] = {}
        for k, v in d.items():
            out.update(flat_params(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): str(d)}


class MLflowHook(RecordHook):
    """Each metrics record as MLflow metrics ``<split>/<key>`` of one MLflow run, at the
    record's step; the calibration config (credentials scrubbed) as the run's parameters.

    Args:
      tracking_uri: where MLflow records (None: MLflow's own default, ``MLFLOW_TRACKING_URI``).
      experiment: the MLflow experiment (made if missing).
      run_name: the MLflow run's name (default: MLflow's).
      run_id: continue this MLflow run (a resumed calibration) instead of starting one.
    """

    def __init__(self, tracking_uri: str | None = None, experiment: str = "differland",
                 run_name: str | None = None, run_id: str | None = None):
        super().__init__()
        # imported here: mlflow is optional (the [mlflow] extra); a missing one is a clear error
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise DifferlandError("--mlflow needs the mlflow package: pip install "
                                  "'differland-dist[mlflow]'") from None
        self._metric, self._param = Metric, Param
        try:
            self.client = MlflowClient(tracking_uri)
            if run_id is None:
                exp = self.client.get_experiment_by_name(experiment)
                exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
                run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        except Exception as e:  # noqa: BLE001 - MLflow raises many kinds; say which store failed
            raise DifferlandError(f"mlflow {tracking_uri or '(default tracking URI)'}: "
                                  f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
        self.run_id = run_id

    def start(self, calibration) -> None:
        params = flat_params(safe_config_dict(calibration.config))
        items = [self._param(k, v[:6000]) for k, v in sorted(params.items())]
        for a in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[a:a + 100])

    def write(self, split: str, step: int, scalars: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        items = [self._metric(f"{split}/{k}", v, now, step) for k, v in scalars.items()]
        for a in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[a:a + 1000])

    def close(self, status: str = "FINISHED") -> None:
        self.flush_pending()
        self.client.set_terminated(self.run_id, status=status)

    def __exit__(self, exc_type, *exc) -> None:
        self.close("FINISHED" if exc_type is None else "FAILED")
