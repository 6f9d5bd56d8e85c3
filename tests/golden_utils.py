"""Helpers shared by the parity tests: tolerances of the spec and golden-file evaluation."""

import jax
import jax.numpy as jnp
import numpy as np

from differland_dist.loss import TERMS, LossConfig, loss_from_x
from differland_dist.model.config import PARITY_MODEL
from differland_dist.model.structures import Forcing
from differland_dist.network import NetworkOutputs

PARITY_LOSS = LossConfig(parity=True, enabled={t: True for t in TERMS})


def golden_value_and_grad(g, cfg=PARITY_LOSS):
    P = g["met"].shape[0]
    X = NetworkOutputs(jnp.asarray(g["x_dalec"]), jnp.asarray(g["x_pheno"]), jnp.asarray(g["x_pools"]))

    def fn(X):
        return loss_from_x(X, Forcing.from_array(jnp.asarray(g["met"])), jnp.asarray(g["labels"]),
                           jnp.zeros(P, jnp.int32), jnp.ones(P), 1, cfg, PARITY_MODEL)

    return jax.jit(jax.value_and_grad(fn, has_aux=True))(X)


def output_error_ratio(out, ref):
    """Worst |out - ref| / (rtol |ref| + atol * scale) per output; <= 1 passes the spec."""
    scale = np.abs(ref).max(axis=tuple(range(ref.ndim - 1)))
    err = np.abs(np.asarray(out) - ref) / (1e-4 * np.abs(ref) + 1e-5 * scale + 1e-30)
    return err.max(axis=tuple(range(ref.ndim - 1)))
