"""The run's checkpoints, written and read as one typed
:class:`~differland_dist.storage.checkpoint.CheckpointRecord`: what a checkpoint holds
(network, standardisation, optimizer state, the best dev network), resuming from one, and
which config changes a resume accepts. The state a rollback returns to and the best dev
network (``training.keep = best_dev``) live here, with the checkpoints they belong to."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Callable, Sequence

import numpy as np
from jax.flatten_util import ravel_pytree

from differland_dist.config import ExperimentConfig, with_defaults
from differland_dist.distributed.optim import state_from_arrays, state_to_arrays
from differland_dist.distributed.state import Best, Snapshot, TrainState
from differland_dist.errors import CheckpointError, DifferlandError
from differland_dist.network.io import network_arrays
from differland_dist.network.mlp import network_from_arrays
from differland_dist.network.standardize import Standardizer
from differland_dist.runs.layout import RunDir
from differland_dist.storage.checkpoint import CheckpointRecord

log = logging.getLogger(__name__)

#: What may change when a run is resumed: these training keys, the whole ``ray`` section and
#: how the data is reached (storage options: credentials, endpoints) and cached.
RESUMABLE_TRAINING_KEYS = ("steps", "eval_every", "checkpoint_every")
RESUMABLE_DATA_KEYS = ("storage_options", "cache_bytes", "cache")


def validate_training(arrays: dict, record: CheckpointRecord, url: str) -> None:
    """CheckpointError unless the checkpoint holds what a resume needs."""
    missing = [k for k in ("std_mean", "std_std") if k not in arrays]
    if missing or not isinstance(record.step, int) or record.config is None:
        raise CheckpointError(f"{url}: incomplete training checkpoint (missing "
                              f"{missing or 'step/config'})")


def check_resumable(record: CheckpointRecord, src: str, fingerprint: str, saved_config: dict) -> None:
    """CheckpointError naming what differs unless the run may resume from ``record``: the
    same data and the same config but for :data:`RESUMABLE_TRAINING_KEYS`, ``ray`` and
    :data:`RESUMABLE_DATA_KEYS`."""
    if record.data_fingerprint != fingerprint:
        raise CheckpointError(f"{src}: made on different data (fingerprint "
                              f"{record.data_fingerprint} != {fingerprint})")
    # a key added since the checkpoint was written counts as its default
    saved = json.loads(json.dumps(with_defaults(record.config)))
    mine = json.loads(json.dumps(saved_config))
    for cfg_ in (saved, mine):
        for k in RESUMABLE_DATA_KEYS:
            cfg_.get("data", {}).pop(k, None)
        cfg_.pop("ray", None)
        for k in RESUMABLE_TRAINING_KEYS:
            cfg_.get("training", {}).pop(k, None)
    if json.dumps(saved, sort_keys=True) != json.dumps(mine, sort_keys=True):
        diff = [k for k in mine if json.dumps(mine[k], sort_keys=True) != json.dumps(saved.get(k), sort_keys=True)]
        raise CheckpointError(f"{src}: config differs from the checkpoint's in {diff}; "
                              "only training.steps/eval_every/checkpoint_every, ray and the data "
                              "cache may change on resume")


class CheckpointManager:
    """Writes the run's checkpoints and reads the one to resume from.

    Args:
      rundir: where they go.
      config: the run's config (epochs resolved); ``saved_config``: what is saved of it
        (credentials removed, epochs as given).
      fingerprint: the store's data fingerprint (a resume on other data is refused).
      input_names: the network's input columns (hemisphere first).
      unravel: flat parameters -> network pytree.
      time_split: whether the store splits its sites by time.
    """

    def __init__(self, rundir: RunDir, config: ExperimentConfig, saved_config: dict, fingerprint: str,
                 input_names: Sequence[str], unravel: Callable, time_split: bool):
        self.rundir = rundir
        self.config = config
        self.saved_config = saved_config
        self.fingerprint = fingerprint
        self.input_names = tuple(input_names)
        self.unravel = unravel
        self.time_split = time_split
        self.last: Snapshot | None = None   # what a rollback returns to
        self.best: Best | None = None       # keep = best_dev: the best network so far

    def record(self, state: TrainState) -> CheckpointRecord:
        """The record of a training checkpoint at ``state``."""
        return CheckpointRecord(
            kind="training", step=state.step, config=self.saved_config, data_fingerprint=self.fingerprint,
            lr_scale=state.lr_scale, nonfinite_in_a_row=state.nonfinite_in_a_row,
            skipped=tuple(state.skipped), reinitialised=state.reinitialised,
            rng={"kind": "numpy.default_rng([seed, epoch])", "seed": self.config.training.seed,
                 "next_step": state.step},
            network=dataclasses.asdict(self.config.network), predictor_names=self.input_names,
            time_split=self.time_split,
            best_dev=None if self.best is None else {"step": self.best.step, "dev_loss": self.best.dev_loss})

    def save(self, state: TrainState, standardizer: Standardizer, final: bool = False) -> str:
        """``checkpoints/step_N.npz`` (and at the end ``network.npz``: the last network, or
        the best dev one); it becomes the rollback point. Returns its URL."""
        arrays = network_arrays(self.unravel(state.flat), standardizer)
        arrays.update(state_to_arrays(state.opt_state, "opt/"))
        record = self.record(state)
        network = None
        if self.best is not None:
            # the best network so far travels with every checkpoint, so a resumed run selects
            # among all evaluations, not only those after the restart
            best = network_arrays(self.unravel(self.best.flat), standardizer)
            if final:
                network = (best, dataclasses.replace(record, best_dev=None, selected={
                    "by": "best_dev", "step": self.best.step, "dev_loss": self.best.dev_loss}))
            arrays.update({f"best/{k}": v for k, v in best.items()})
        url = self.rundir.save_checkpoint(arrays, record, final=final, network=network)
        self.last = Snapshot.of(state)
        log.info("checkpoint %s", url)
        return url

    def begin(self, resume: bool) -> tuple[dict, CheckpointRecord] | None:
        """Open the run directory for writing (the caller holds its lease): refuse to start
        over a run's checkpoints unless ``resume``, remove a killed writer's temporary files,
        find the checkpoint to resume from, save the config. Returns (arrays, record) to
        resume from, or None to start afresh."""
        if not resume and self.rundir.has_checkpoints():
            raise DifferlandError(f"{self.rundir.loc.url} already holds checkpoints: pass --resume to "
                                  "continue it, or choose another --out")
        # We hold the lease: temporary files here are a killed writer's, never a live one's.
        self.rundir.remove_stale_temp_files()
        found = self.find_resume() if resume else None
        self.rundir.write_config(self.saved_config)
        return found

    def find_resume(self) -> tuple[dict, CheckpointRecord] | None:
        """(arrays, record) of the newest readable checkpoint, checked resumable; None if
        the run directory has none."""
        found = self.rundir.find_resume(validate_training)
        if found is None:
            return None
        src, (arrays, record) = found
        check_resumable(record, src, self.fingerprint, self.saved_config)
        return arrays, record

    def restore(self, arrays: dict, record: CheckpointRecord, opt_template) -> tuple[TrainState, Standardizer]:
        """The state and standardisation a checkpoint holds; it becomes the rollback point
        (and its best network, with keep = best_dev, the best so far)."""
        standardizer = Standardizer(self.input_names, arrays["std_mean"], arrays["std_std"])
        flat = np.asarray(ravel_pytree(network_from_arrays(arrays))[0])
        state = TrainState(flat, state_from_arrays(opt_template, arrays, "opt/"), int(record.step),
                           float(1.0 if record.lr_scale is None else record.lr_scale),
                           int(record.nonfinite_in_a_row or 0), list(record.skipped or ()),
                           int(record.reinitialised or 0))
        self.last = Snapshot.of(state)
        if self.config.training.keep == "best_dev" and record.best_dev is not None:
            best = {k[len("best/"):]: v for k, v in arrays.items() if k.startswith("best/")}
            self.best = Best(int(record.best_dev["step"]), float(record.best_dev["dev_loss"]),
                             np.asarray(ravel_pytree(network_from_arrays(best))[0]))
        return state, standardizer

    def start(self, state: TrainState) -> None:
        """A (fresh) start: ``state`` is the rollback point, no network of an earlier start is kept."""
        self.last = Snapshot.of(state)
        self.best = None

    def offer(self, state: TrainState, dev_loss: float) -> None:
        """Keep ``state``'s network as the best one if its dev loss is the lowest so far."""
        self.best = Best(state.step, dev_loss, state.flat.copy())
