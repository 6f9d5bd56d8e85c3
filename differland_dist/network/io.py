"""Save and load a network (weights + architecture + standardisation) as a safe checkpoint
(:mod:`differland_dist.storage.checkpoint`, its metadata one ``CheckpointRecord``)."""

from __future__ import annotations

import dataclasses

import numpy as np

from differland_dist.errors import CheckpointError
from differland_dist.network.mlp import NetworkConfig, NetworkParams, network_from_arrays, network_to_arrays
from differland_dist.network.standardize import Standardizer
from differland_dist.storage import checkpoint
from differland_dist.storage.checkpoint import CheckpointRecord
from differland_dist.storage.location import Location


def network_arrays(net: NetworkParams, standardizer: Standardizer | None = None) -> dict[str, np.ndarray]:
    """The arrays of a network checkpoint: ``net_*`` and, with a standardiser, ``std_mean``
    and ``std_std`` (float64, one per input column)."""
    arrays = network_to_arrays(net)
    if standardizer is not None:
        arrays["std_mean"] = np.asarray(standardizer.mean)
        arrays["std_std"] = np.asarray(standardizer.std)
    return arrays


def network_record(record: CheckpointRecord, config: NetworkConfig,
                   standardizer: Standardizer | None = None) -> CheckpointRecord:
    """``record`` naming the network's architecture and (with a standardiser) its input columns."""
    names = None if standardizer is None else tuple(standardizer.names)
    return dataclasses.replace(record, network=dataclasses.asdict(config),
                               predictor_names=names or record.predictor_names)


def save_network(where: Location, net: NetworkParams, config: NetworkConfig, *,
                 record: CheckpointRecord | None = None,
                 standardizer: Standardizer | None = None) -> None:
    """Write ``net`` (and its standardisation) to ``where``; ``record``: what else the
    checkpoint says (kind, predictor sets, step, config ...), default a bare network."""
    rec = network_record(record or CheckpointRecord(kind="network", predictor_sets=()), config, standardizer)
    checkpoint.write(where, network_arrays(net, standardizer), rec)


def network_from_checkpoint(arrays: dict[str, np.ndarray], record: CheckpointRecord):
    """(NetworkParams, NetworkConfig, Standardizer | None) from a loaded checkpoint."""
    try:
        net = network_from_arrays(arrays)
    except KeyError as e:
        raise CheckpointError(f"checkpoint holds no network: {e}") from None
    cfg = NetworkConfig(**record.network)
    std = None
    if "std_mean" in arrays:
        std = Standardizer(tuple(record.predictor_names), arrays["std_mean"], arrays["std_std"])
    return net, cfg, std


def load_network(where: Location):
    arrays, record = checkpoint.read(where)
    return network_from_checkpoint(arrays, record)
