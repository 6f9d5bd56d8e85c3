"""Save and load a network (weights + architecture + standardisation) as a safe checkpoint."""

from __future__ import annotations

from typing import Any

import numpy as np

from differland_dist.storage import checkpoint
from differland_dist.errors import CheckpointError
from differland_dist.network.mlp import NetworkConfig, NetworkParams, network_from_arrays, network_to_arrays
from differland_dist.network.standardize import Standardizer


def save_network(url: str, net: NetworkParams, config: NetworkConfig, *, predictor_sets=None,
                 standardizer: Standardizer | None = None, extra: dict[str, Any] | None = None,
                 storage_options: dict | None = None) -> None:
    arrays = network_to_arrays(net)
    meta: dict[str, Any] = {"kind": "network", "network": config.__dict__.copy(),
                            "predictor_sets": list(predictor_sets or [])}
    if standardizer is not None:
        arrays["std_mean"] = np.asarray(standardizer.mean)
        arrays["std_std"] = np.asarray(standardizer.std)
        meta["predictor_names"] = list(standardizer.names)
    meta.update(extra or {})
    checkpoint.save(url, arrays, meta, storage_options)


def network_from_checkpoint(arrays: dict[str, np.ndarray], meta: dict[str, Any]):
    """(NetworkParams, NetworkConfig, Standardizer | None) from a loaded checkpoint."""
    try:
        net = network_from_arrays(arrays)
    except KeyError as e:
        raise CheckpointError(f"checkpoint holds no network: {e}") from None
    cfg = NetworkConfig(**meta.get("network", {}))
    std = None
    if "std_mean" in arrays:
        std = Standardizer(tuple(meta["predictor_names"]), arrays["std_mean"], arrays["std_std"])
    return net, cfg, std


def load_network(url: str, storage_options: dict | None = None):
    arrays, meta = checkpoint.load(url, storage_options)
    return network_from_checkpoint(arrays, meta)
