"""The run directory's layout, read and written in this one module (it uses only
:mod:`differland_dist.storage`, so the trainer, inference, evaluation and experiments all
sit above it).

    RUN_DIR/config.yaml                      the full validated config of the run
    RUN_DIR/metrics.jsonl                    one JSON object per step / evaluation, appended
    RUN_DIR/checkpoints/step_00000050.npz    safe checkpoints (see :mod:`differland_dist.storage.checkpoint`)
    RUN_DIR/checkpoints/latest.json          {"step": 50, "path": "step_00000050.npz"}, written last
    RUN_DIR/network.npz                      the kept network (same format), written at the end:
                                             the last, or the best-dev one (training.keep)
    RUN_DIR/.differland-lease.json           the running writer's lease (see :mod:`differland_dist.storage.lease`)

Saved configs never hold credentials (:func:`differland_dist.storage.secrets.safe_config_dict`).
A checkpoint holds the network (``net_*``), the predictor standardisation (``std_mean``,
``std_std``), the optimizer state (``opt/...``) and its :class:`~differland_dist.storage.
checkpoint.CheckpointRecord` (step, config, data fingerprint, RNG state).

The trainer writes through :class:`RunDir`; readers (:func:`differland_dist.runs.trained.
load_trained`, ``evaluate``'s training curves, an experiment's member losses) use
:func:`resolve_checkpoint`, :func:`read_latest`, :func:`checkpoint_steps` and
:func:`read_metrics`. Every function takes the run directory as a
:class:`~differland_dist.storage.location.Location`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Callable

import yaml

from differland_dist.storage import checkpoint
from differland_dist.errors import CheckpointError, DifferlandError
from differland_dist.storage.location import Location

log = logging.getLogger(__name__)

#: A checkpoint file name and the step it holds.
CHECKPOINT_RE = re.compile(r"^step_(\d{8})\.npz$")

#: The files of a run directory (and its ``checkpoints/``) that differland writes.
RUN_FILES = re.compile(r"^(config\.yaml|metrics\.jsonl|network\.npz|latest\.json|step_\d{8}\.npz|"
                       r"\.differland-lease\.json)$")

#: The temporary name ``Location.write_atomic`` gives a file before renaming it.
TEMP_SUFFIX = re.compile(r"\.tmp-[0-9a-f]{8}$")

METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
#: The kept network, written at the end of a run.
NETWORK = "network.npz"


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.npz"


def checkpoint_location(run_dir: Location, step: int) -> Location:
    """``RUN_DIR/checkpoints/step_N.npz``."""
    return run_dir.join(CHECKPOINTS, checkpoint_name(step))


def read_latest(run_dir: Location) -> dict | None:
    """``checkpoints/latest.json`` of a run directory ({"step", "path"}), or None if absent;
    CheckpointError naming the file if it is unreadable."""
    loc = run_dir.join(CHECKPOINTS, LATEST)
    try:
        info = loc.read_json(default=None)
    except DifferlandError as e:
        raise CheckpointError(f"{e}; it should be {{\"step\": N, \"path\": \"step_N.npz\"}}") from None
    except OSError as e:
        raise CheckpointError(f"{loc.url}: cannot be read ({type(e).__name__}: {e})") from None
    if info is None:
        return None
    if not (isinstance(info, dict) and isinstance(info.get("path"), str)
            and CHECKPOINT_RE.match(info["path"]) and isinstance(info.get("step"), int)):
        raise CheckpointError(f"{loc.url}: not a latest-checkpoint record (expected "
                              f"{{\"step\": N, \"path\": \"step_N.npz\"}}, got {str(info)[:80]!r})")
    return info


def latest_checkpoint(run_dir: Location) -> Location | None:
    """The run's newest complete checkpoint, or None; CheckpointError if ``latest.json`` is
    unreadable."""
    info = read_latest(run_dir)
    return None if info is None else run_dir.join(CHECKPOINTS, info["path"])


def resolve_checkpoint(where: Location) -> Location:
    """A checkpoint file from a file or a run directory (its final network, else its latest
    checkpoint)."""
    if where.url.endswith(".npz"):
        return where
    final = where.join(NETWORK)
    if checkpoint.exists(final):
        return final
    latest = latest_checkpoint(where)
    if latest is None:
        raise CheckpointError(f"{where.url}: neither a .npz checkpoint nor a run directory with checkpoints")
    return latest


def checkpoint_steps(run_dir: Location) -> list[int]:
    """Steps of the ``checkpoints/step_*.npz`` files of a run directory, newest first."""
    found = run_dir.join(CHECKPOINTS).list_objects()
    steps = [int(m.group(1)) for k in found if "/" not in k and (m := CHECKPOINT_RE.match(k))]
    return sorted(steps, reverse=True)


def remove_stale_temp_files(run_dir: Location) -> list[str]:
    """Delete the temporary files a killed writer of this run directory left (local only:
    on object stores nothing is written under a temporary name). Only names made of one of
    our files plus ``write_atomic``'s suffix are removed; the caller must hold the run's
    lease. Returns the removed keys."""
    loc = run_dir
    if not loc.local:
        return []
    removed = []
    for key in loc.list_objects():
        parts = key.split("/")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != CHECKPOINTS):
            continue
        base = TEMP_SUFFIX.sub("", parts[-1])
        if base != parts[-1] and RUN_FILES.match(base):
            loc.join(key).remove()
            removed.append(key)
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run: %s", run_dir.url,
                 len(removed), ", ".join(sorted(removed)))
    return removed


def parse_metrics(text: str, source: str = METRICS) -> list[dict]:
    """The records of ``metrics.jsonl`` text; a line that is not a JSON object (the last line
    of a write cut short by a kill) is dropped with a warning."""
    out = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: dropping unreadable line %d (a write cut short by a kill)", source, i + 1)
            continue
        if isinstance(m, dict):
            out.append(m)
    return out


def read_metrics(run_dir: Location, upto_step: int | None = None) -> list[dict]:
    """Every record of ``RUN_DIR/metrics.jsonl`` in file order (``[]`` if there is none), or
    those of steps ``<= upto_step``. Records are dicts with ``step`` (int) and ``split``
    (``train`` or ``dev``) and the loss terms."""
    loc = run_dir.join(METRICS)
    try:
        text = loc.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    recs = parse_metrics(text, loc.url)
    if upto_step is not None:
        recs = [m for m in recs if isinstance(m.get("step"), int) and m["step"] <= upto_step]
    return recs


class RunDir:
    """The writer's view of a run directory: checkpoints, ``latest.json``, ``config.yaml`` and
    ``metrics.jsonl`` (the records in :attr:`metrics`, appended as they come).

    Args:
      loc: the run directory (local path or object-storage URL, with its options).
      check: called before every write (the lease's check; raises if the lease was lost).
    """

    def __init__(self, loc: Location, check: Callable[[], None] | None = None):
        self.loc = loc
        self.check = check or (lambda: None)
        self.metrics: list[dict] = []
        self._saved = 0   # records of self.metrics already in metrics.jsonl

    # -- checkpoints ---------------------------------------------------------------------------
    def has_checkpoints(self) -> bool:
        """Whether a checkpoint or ``latest.json`` (even a corrupt one) is there."""
        try:
            if read_latest(self.loc) is not None:
                return True
        except CheckpointError:
            return True
        return bool(checkpoint_steps(self.loc))

    def remove_stale_temp_files(self) -> list[str]:
        return remove_stale_temp_files(self.loc)

    def find_resume(self, validate: Callable[[dict, checkpoint.CheckpointRecord, str], None] | None = None
                    ) -> tuple[str, tuple[dict, checkpoint.CheckpointRecord]] | None:
        """The newest readable checkpoint to resume from, as (url, (arrays, record)):
        latest.json's, else (if that one or latest.json is corrupt) the newest older one that
        loads, with a warning. None if the run directory has no checkpoints. ``validate``
        (arrays, record, url) may raise CheckpointError to skip a checkpoint."""
        steps = checkpoint_steps(self.loc)
        try:
            latest = read_latest(self.loc)
        except CheckpointError as e:
            log.warning("%s; looking for the newest readable checkpoint instead", e)
            latest = None
        else:
            if latest is not None:
                steps = [latest["step"]] + [s for s in steps if s < latest["step"]]
        if latest is None and not steps:
            return None
        problems = []
        for step in steps:
            where = checkpoint_location(self.loc, step)
            url = where.url
            try:
                arrays, record = checkpoint.read(where)
                if validate is not None:
                    validate(arrays, record, url)
            except CheckpointError as e:
                log.warning("cannot resume from %s (%s); trying the previous checkpoint", url, e)
                problems.append(str(e))
                continue
            if problems:
                log.warning("resuming from %s, the newest readable checkpoint", url)
            return url, (arrays, record)
        raise CheckpointError(f"{self.loc.url}: no readable checkpoint to resume from: "
                              + "; ".join(problems))

    def final_exists(self) -> bool:
        return checkpoint.exists(self.loc.join(NETWORK))

    def save_checkpoint(self, arrays: dict, record: checkpoint.CheckpointRecord, final: bool = False,
                        network: tuple[dict, checkpoint.CheckpointRecord] | None = None) -> str:
        """Write ``checkpoints/step_N.npz`` (N: ``record.step``) then commit it in
        ``latest.json`` (and, if ``final``, ``network.npz``: the checkpoint's arrays, or
        ``network`` (arrays, record) when given). The metrics up to now are saved first: once
        latest.json names a step, its records are in ``metrics.jsonl``. Returns the
        checkpoint's URL."""
        step = int(record.step)
        where = checkpoint_location(self.loc, step)
        self.flush_metrics(commit=True)
        self.check()
        checkpoint.write(where, arrays, record)
        self.loc.join(CHECKPOINTS, LATEST).write_json({"step": step, "path": checkpoint_name(step)})
        if final:
            net_arrays, net_record = network if network is not None else (arrays, record)
            checkpoint.write(self.loc.join(NETWORK), net_arrays, net_record)
        return where.url

    def write_config(self, config: dict) -> None:
        self.check()
        self.loc.join(CONFIG).write_atomic(yaml.safe_dump(config, sort_keys=False).encode())

    # -- metrics -------------------------------------------------------------------------------
    def flush_metrics(self, commit: bool = False) -> None:
        """Save the records not yet in ``metrics.jsonl``. Locally they are appended (one
        write, fsynced; a kill mid-write leaves a partial last line, which loading drops).
        Object stores cannot append: there the whole file is rewritten in one atomic upload,
        only when ``commit`` (at checkpoints and the end)."""
        new = self.metrics[self._saved:]
        if not new:
            return
        self.check()
        target = self.loc.join(METRICS)
        if target.local:
            os.makedirs(os.path.dirname(target.path) or ".", exist_ok=True)
            with open(target.path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(m) + "\n" for m in new))
                f.flush()
                os.fsync(f.fileno())
        elif commit:
            target.write_atomic("".join(json.dumps(m) + "\n" for m in self.metrics).encode())
        else:
            return
        self._saved = len(self.metrics)

    def reset_metrics(self, upto_step: int | None) -> None:
        """Start ``metrics.jsonl`` afresh (None) or keep the records up to ``upto_step`` (a
        resume: later records, and a partial last line, belong to steps that will be redone);
        rewritten atomically once, then appended to."""
        self.metrics[:] = [] if upto_step is None else read_metrics(self.loc, upto_step)
        self.check()
        self.loc.join(METRICS).write_atomic("".join(json.dumps(m) + "\n" for m in self.metrics).encode())
        self._saved = len(self.metrics)

    def load_metrics(self, upto_step: int) -> None:
        """The records up to ``upto_step``, read only (a finished run)."""
        self.metrics[:] = read_metrics(self.loc, upto_step)
        self._saved = len(self.metrics)

    def append(self, record: dict[str, Any]) -> None:
        """A record for ``metrics.jsonl`` (saved by the next :meth:`flush_metrics`)."""
        self.metrics.append(record)
