"""Network → parameters → lean rollout → loss terms, as one differentiable function."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from differland_dist.vocabulary.labels import Labels
from differland_dist.loss.terms import (
    LossConfig, check_labels, loss_terms, required_series, total_loss)
from differland_dist.model.config import ModelConfig
from differland_dist.model.rollout import rollout
from differland_dist.model.structures import Forcing, Parameters
from differland_dist.network.mlp import NetworkOutputs, NetworkParams, apply_network, to_parameters


def loss_from_parameters(params: Parameters, forcing: Forcing, labels: Labels, patch, valid,
                         n_patches: int, loss_cfg: LossConfig, model_cfg: ModelConfig,
                         patch_rows: int = 0):
    """(total, terms dict) for physical parameters (fields (P,)), forcing fields (P, T) and
    :class:`~differland_dist.vocabulary.labels.Labels` of (P, T) leaves; ``patch`` (P,) int local patch
    index in [0, n_patches), ``valid`` (P,) 1 for real pixels, 0 for padding; ``patch_rows``:
    see :func:`~differland_dist.loss.terms.loss_terms`."""
    check_labels(labels)  # before the rollout: a wrong argument fails at once
    outputs, sums = required_series(loss_cfg)
    T = jnp.shape(forcing.days)[-1]
    _, series, totals = rollout(params, forcing, outputs=outputs, sums=sums,
                                checkpoint_every=model_cfg.segment(T),
                                closed_budget=model_cfg.closed_budget, unroll=model_cfg.unroll,
                                pixel_block=model_cfg.block())
    terms = loss_terms(series, totals, params.initial_pools.stack(), labels, patch, valid,
                       n_patches, loss_cfg, patch_rows)
    return total_loss(terms), terms


def loss_from_x(x: NetworkOutputs, forcing: Forcing, labels: Labels, patch, valid, n_patches: int,
                loss_cfg: LossConfig, model_cfg: ModelConfig, patch_rows: int = 0):
    """As :func:`loss_from_parameters`, from the network's unbounded outputs."""
    return loss_from_parameters(to_parameters(x), forcing, labels, patch, valid, n_patches,
                                loss_cfg, model_cfg, patch_rows)


def network_loss(net: NetworkParams, predictors, forcing: Forcing, labels: Labels, patch, valid,
                 n_patches: int, loss_cfg: LossConfig, model_cfg: ModelConfig,
                 activation: str = "leaky_relu", patch_rows: int = 0):
    """(total, terms) for network weights and standardised predictors (P, 1 + n)."""
    return loss_from_x(apply_network(net, predictors, activation), forcing, labels, patch, valid,
                       n_patches, loss_cfg, model_cfg, patch_rows)


@partial(jax.jit, static_argnames=("n_patches", "loss_cfg", "model_cfg", "activation"))
def network_value_and_grad(net: NetworkParams, predictors, forcing: Forcing, labels: Labels, patch, valid,
                           n_patches: int, loss_cfg: LossConfig, model_cfg: ModelConfig,
                           activation: str = "leaky_relu"):
    """((total, terms), d total / d net) — what one worker computes for its patches."""
    return jax.value_and_grad(network_loss, has_aux=True)(
        net, predictors, forcing, labels, patch, valid, n_patches, loss_cfg, model_cfg, activation)
