"""Helpers shared by the parity tests: tolerances of the spec and golden-file evaluation."""

import jax
import jax.numpy as jnp
import numpy as np

from differland_dist.vocabulary.labels import Labels
from differland_dist.loss import TERMS, LossConfig, loss_from_x
from differland_dist.model.config import PARITY_MODEL
from differland_dist.model.structures import Forcing
from differland_dist.network import NetworkOutputs

PARITY_LOSS = LossConfig(parity=True, enabled={t: True for t in TERMS})


def _loss(X, met, labels, cfg):
    P = met.shape[0]
    return loss_from_x(X, Forcing.from_array(met), labels, jnp.zeros(P, jnp.int32), jnp.ones(P), 1,
                       cfg, PARITY_MODEL)


# one compilation per (shapes, config), shared by every test in the session
_value_and_grad = jax.jit(jax.value_and_grad(_loss, has_aux=True), static_argnums=3)


def golden_value_and_grad(g, cfg=PARITY_LOSS):
    X = NetworkOutputs(jnp.asarray(g["x_dalec"]), jnp.asarray(g["x_pheno"]), jnp.asarray(g["x_pools"]))
    return _value_and_grad(X, jnp.asarray(g["met"]), Labels.from_published(jnp.asarray(g["labels"])),
                           cfg)


def output_error_ratio(out, ref):
    """Worst |out - ref| / (rtol |ref| + atol * scale) per output; <= 1 passes the spec."""
    scale = np.abs(ref).max(axis=tuple(range(ref.ndim - 1)))
    err = np.abs(np.asarray(out) - ref) / (1e-4 * np.abs(ref) + 1e-5 * scale + 1e-30)
    return err.max(axis=tuple(range(ref.ndim - 1)))
