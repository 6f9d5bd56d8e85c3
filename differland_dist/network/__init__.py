"""The spatialisation network: predictors → unbounded DALEC parameters."""

from differland_dist.network.mlp import (
    Dense, NetworkConfig, NetworkOutputs, NetworkParams, apply_network, infer_config,
    init_network, network_from_arrays, network_to_arrays, to_parameters)
from differland_dist.network.standardize import Standardizer, hemisphere_feature

__all__ = ["Dense", "NetworkConfig", "NetworkOutputs", "NetworkParams", "apply_network",
           "infer_config", "init_network", "network_from_arrays", "network_to_arrays",
           "to_parameters", "Standardizer", "hemisphere_feature"]
