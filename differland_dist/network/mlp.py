"""The spatialisation network: an embedding MLP and three linear heads.

predictors (P, 1 + n): column 0 is the (standardised) hemisphere feature sigmoid(lat), the
rest the chosen predictor set, standardised with the training pixels' mean and std.
The embedding takes the n predictors (without the hemisphere feature); the phenology head
takes [embedding, hemisphere feature].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from differland_dist.common import checks
from differland_dist.vocabulary.parameters import (
    PHENOLOGY_PARAMETERS, POOLS, PROCESS_PARAMETERS, bounds_array, to_bounded)
from differland_dist.model.structures import Parameters

_ACTIVATIONS = {
    "leaky_relu": jax.nn.leaky_relu,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture; the paper's (3 layers of 32, leaky-ReLU) is the default."""

    hidden_layers: int = 3  # hidden layers of the shared embedding
    width: int = 32  # units per hidden layer
    activation: str = "leaky_relu"  # hidden-layer activation
    #: Factor on the three heads' initial Glorot weights. 1 is the paper's initialisation, whose
    #: untrained parameter maps are PFT patterns as large as real spatial variation; below 1 they
    #: are nearly uniform, and in the twin experiment members then learnt more of the true
    #: patterns (docs/analysis.md, "What changed the PFT bias").
    head_init_scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "hidden_layers", checks.integer("network.hidden_layers", self.hidden_layers, 1))
        object.__setattr__(self, "width", checks.integer("network.width", self.width, 1))
        checks.choice("network.activation", self.activation, sorted(_ACTIVATIONS))
        object.__setattr__(self, "head_init_scale",
                           checks.number("network.head_init_scale", self.head_init_scale, 0.0, 1.0))


class Dense(NamedTuple):
    weights: jax.Array  # (n_in, n_out)
    biases: jax.Array   # (n_out,)


class NetworkParams(NamedTuple):
    embed: tuple[Dense, ...]
    dalec_head: Dense
    pool_head: Dense
    pheno_head: Dense


class NetworkOutputs(NamedTuple):
    """Unbounded outputs: process (P, 31), phenology (P, 2), initial pools (P, 7)."""

    x_dalec: jax.Array
    x_pheno: jax.Array
    x_pools: jax.Array


_DALEC_LO, _DALEC_HI = bounds_array(PROCESS_PARAMETERS)
_PHENO_LO, _PHENO_HI = bounds_array(PHENOLOGY_PARAMETERS)
_POOL_LO, _POOL_HI = bounds_array(POOLS)


def _dense(key, n_in, n_out, scale: float = 1.0) -> Dense:
    w = jax.nn.initializers.glorot_normal()(key, (n_in, n_out), jnp.float32)
    return Dense(w * scale, jnp.ones((n_out,), jnp.float32))


def init_network(key, n_predictors: int, config: NetworkConfig = NetworkConfig()) -> NetworkParams:
    """Glorot-normal weights (the heads' times ``config.head_init_scale``), biases 1.
    ``n_predictors`` excludes the hemisphere feature."""
    widths = [n_predictors] + [config.width] * config.hidden_layers
    keys = jax.random.split(key, config.hidden_layers + 3)
    embed = tuple(_dense(k, a, b) for k, a, b in zip(keys, widths[:-1], widths[1:]))
    w, s = config.width, config.head_init_scale
    return NetworkParams(embed, _dense(keys[-3], w, len(PROCESS_PARAMETERS), s),
                         _dense(keys[-2], w, len(POOLS), s), _dense(keys[-1], w + 1, len(PHENOLOGY_PARAMETERS), s))


def apply_network(params: NetworkParams, predictors, activation: str = "leaky_relu") -> NetworkOutputs:
    """Unbounded outputs for standardised predictors (P, 1 + n)."""
    act = _ACTIVATIONS[activation]
    x = predictors[:, 1:]
    for layer in params.embed:
        x = act(x @ layer.weights + layer.biases)
    x_dalec = x @ params.dalec_head.weights + params.dalec_head.biases
    x_pools = x @ params.pool_head.weights + params.pool_head.biases
    aug = jnp.concatenate([x, predictors[:, :1]], axis=1)
    x_pheno = aug @ params.pheno_head.weights + params.pheno_head.biases
    return NetworkOutputs(x_dalec, x_pheno, x_pools)


def to_parameters(x: NetworkOutputs) -> Parameters:
    """Bounded physical parameters from unbounded network outputs."""
    return Parameters.from_arrays(to_bounded(x.x_dalec, _DALEC_LO, _DALEC_HI),
                                  to_bounded(x.x_pheno, _PHENO_LO, _PHENO_HI),
                                  to_bounded(x.x_pools, _POOL_LO, _POOL_HI))


def network_from_arrays(arrays: dict[str, np.ndarray], prefix: str = "net_") -> NetworkParams:
    """From flat arrays named ``{prefix}embed_{i}_weights`` / ``..._biases`` and
    ``{prefix}{dalec,pool,pheno}_head_0_{weights,biases}`` (the golden-file layout)."""
    def dense(name):
        return Dense(jnp.asarray(arrays[f"{prefix}{name}_weights"], jnp.float32),
                     jnp.asarray(arrays[f"{prefix}{name}_biases"], jnp.float32))
    n = 0
    while f"{prefix}embed_{n}_weights" in arrays:
        n += 1
    if n == 0:
        raise KeyError(f"no '{prefix}embed_0_weights' array: not a network")
    return NetworkParams(tuple(dense(f"embed_{i}") for i in range(n)), dense("dalec_head_0"),
                         dense("pool_head_0"), dense("pheno_head_0"))


def network_to_arrays(params: NetworkParams, prefix: str = "net_") -> dict[str, np.ndarray]:
    """Inverse of :func:`network_from_arrays`."""
    out = {}
    for i, layer in enumerate(params.embed):
        out[f"{prefix}embed_{i}_weights"] = np.asarray(layer.weights)
        out[f"{prefix}embed_{i}_biases"] = np.asarray(layer.biases)
    for head in ("dalec_head", "pool_head", "pheno_head"):
        layer = getattr(params, head)
        out[f"{prefix}{head}_0_weights"] = np.asarray(layer.weights)
        out[f"{prefix}{head}_0_biases"] = np.asarray(layer.biases)
    return out


def infer_config(params: NetworkParams, activation: str = "leaky_relu") -> NetworkConfig:
    return NetworkConfig(hidden_layers=len(params.embed), width=int(params.embed[-1].weights.shape[1]),
                         activation=activation)
