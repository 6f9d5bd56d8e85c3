"""The run directory: where ``differland calibrate`` writes and what inference reads
(its files are read and written by :mod:`differland_dist.distributed.rundir`).

    RUN_DIR/config.yaml                      the full validated config of the run
    RUN_DIR/metrics.jsonl                    one JSON object per step / evaluation
    RUN_DIR/checkpoints/step_00000050.npz    safe checkpoints (see :mod:`differland_dist.storage.checkpoint`)
    RUN_DIR/checkpoints/latest.json          {"step": 50, "path": "step_00000050.npz"}, written last
    RUN_DIR/network.npz                      the kept network (same format), written at the end:
                                             the last, or the best-dev one (training.keep)
    RUN_DIR/.differland-lease.json           the running writer's lease (see :mod:`differland_dist.storage.lease`)

Saved configs never hold credentials (:func:`differland_dist.storage.secrets.safe_config_dict`).

A checkpoint holds the network (``net_*``), the predictor standardisation (``std_mean``,
``std_std``), the optimizer state (``opt/...``) and, in its metadata, the step, the full
config, the data fingerprint and the RNG state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from differland_dist.storage import checkpoint
from differland_dist.config import ExperimentConfig, from_dict
# The run directory's layout is read and written in one module; re-exported here for readers.
from differland_dist.distributed.rundir import (  # noqa: F401
    CHECKPOINT_RE, RUN_FILES, TEMP_SUFFIX, checkpoint_name, checkpoint_steps, latest_checkpoint,
    read_latest, read_metrics, remove_stale_temp_files)
from differland_dist.errors import CheckpointError
from differland_dist.storage.location import join
from differland_dist.network.io import network_from_checkpoint
from differland_dist.network.mlp import NetworkConfig, NetworkParams
from differland_dist.network.standardize import Standardizer

log = logging.getLogger(__name__)


def resolve_checkpoint(url: str, storage_options: dict | None = None) -> str:
    """A checkpoint file URL from a file URL or a run directory (its final network, else its
    latest checkpoint)."""
    if url.endswith(".npz"):
        return url
    final = join(url, "network.npz")
    if checkpoint.exists(final, storage_options):
        return final
    latest = latest_checkpoint(url, storage_options)
    if latest is None:
        raise CheckpointError(f"{url}: neither a .npz checkpoint nor a run directory with checkpoints")
    return latest


@dataclass(frozen=True)
class TrainedCheckpoint:
    """What a training checkpoint holds, loaded: the network and its config, the predictor
    standardisation, the calibration config, the step, where it came from and its metadata.
    :class:`differland_dist.notebook.trained.TrainedModel` is the façade that computes with it."""

    network: NetworkParams
    network_config: NetworkConfig
    standardizer: Standardizer
    config: ExperimentConfig
    step: int
    source: str
    meta: dict[str, Any]


def load_trained(url: str, storage_options: dict | None = None) -> TrainedCheckpoint:
    """Network, standardisation and config of a training checkpoint or run directory."""
    src = resolve_checkpoint(url, storage_options)
    arrays, meta = checkpoint.load(src, storage_options)
    net, ncfg, std = network_from_checkpoint(arrays, meta)
    if std is None or "config" not in meta:
        raise CheckpointError(f"{src}: holds a network but no training config/standardisation "
                              "(an imported network needs its predictor statistics)")
    return TrainedCheckpoint(net, ncfg, std, from_dict(meta["config"]), int(meta.get("step", 0)), src, meta)
