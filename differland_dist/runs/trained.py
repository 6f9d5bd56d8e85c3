"""A training checkpoint (or run directory) loaded: what ``differland infer``, evaluation,
the analyses and the notebook's ``TrainedModel`` compute with. The files are found through
:mod:`differland_dist.runs.layout`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from differland_dist.config import ExperimentConfig, from_dict
from differland_dist.errors import CheckpointError
from differland_dist.network.io import network_from_checkpoint
from differland_dist.network.mlp import NetworkConfig, NetworkParams
from differland_dist.network.standardize import Standardizer
from differland_dist.runs.layout import resolve_checkpoint
from differland_dist.storage import checkpoint
from differland_dist.storage.checkpoint import CheckpointRecord
from differland_dist.storage.location import Location, as_location

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedCheckpoint:
    """What a training checkpoint holds, loaded: the network and its config, the predictor
    standardisation, the calibration config, the step, where it came from and its record.
    :class:`differland_dist.notebook.trained.TrainedModel` is the façade that computes with it."""

    network: NetworkParams
    network_config: NetworkConfig
    standardizer: Standardizer
    config: ExperimentConfig
    step: int
    source: str
    record: CheckpointRecord


def load_trained(where: Location | str) -> TrainedCheckpoint:
    """Network, standardisation and config of a training checkpoint or run directory (a URL
    string is read without storage options)."""
    src = resolve_checkpoint(as_location(where))
    arrays, record = checkpoint.read(src)
    net, ncfg, std = network_from_checkpoint(arrays, record)
    if std is None or record.config is None:
        raise CheckpointError(f"{src.url}: holds a network but no training config/standardisation "
                              "(an imported network needs its predictor statistics)")
    return TrainedCheckpoint(net, ncfg, std, from_dict(record.config), int(record.step or 0), src.url, record)
