"""Ensemble members side by side in one call: the loss and gradient of M networks, each on its
own batch of pixels, vmapped over a leading member axis.

On an accelerator this is how a grid fills the device (one call holds pixels × members); on a
CPU the rollout is already vectorised over pixels, so stacking members only lengthens the batch
(``benchmarks/bench_member_batch.py`` measures both ways; docs/experiments.md says which to use
where). vmap maps the same per-member program over the member axis: a member's loss is the
same bits as its own call, its gradient equal to float rounding (~1e-7 relative, not bit for
bit: XLA vectorises the batched backward pass differently; docs/experiments.md;
tests/test_member_batch.py compares them).

A library function (docs/python.md, "Ensemble members in one call"), not a training mode:
the runner trains members separately, so that a member's bits never depend on batching.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp

from differland_dist.vocabulary.labels import Labels
from differland_dist.loss import LossConfig
from differland_dist.loss.objective import network_loss
from differland_dist.model.config import ModelConfig
from differland_dist.network.mlp import NetworkParams


def stack_members(trees: Sequence) -> object:
    """M pytrees of one structure → one pytree whose leaves gain a leading member axis (M, ...)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def member(tree, m: int):
    """Member ``m`` of a stacked pytree (the inverse of :func:`stack_members` for one member)."""
    return jax.tree.map(lambda leaf: leaf[m], tree)


@partial(jax.jit, static_argnames=("n_patches", "loss_cfg", "model_cfg", "activation"))
def members_value_and_grad(nets: NetworkParams, predictors, forcing, labels: Labels, patch, valid,
                           n_patches: int, loss_cfg: LossConfig, model_cfg: ModelConfig,
                           activation: str = "leaky_relu"):
    """((total (M,), terms {name: (M,)}), d total / d net (M, ...)) for M stacked networks.

    Every argument but the static ones carries a leading member axis: ``nets`` (stacked
    :class:`NetworkParams`), ``predictors`` (M, P, 1 + n), ``forcing`` (a Forcing of (M, P, T)
    fields), ``labels`` (a :class:`~differland_dist.vocabulary.labels.Labels` of (M, P, T) leaves),
    ``patch`` (M, P) int, ``valid`` (M, P); :func:`stack_members` builds them. Each member is
    the loss of :func:`differland_dist.loss.network_value_and_grad` on its own slice."""
    def one(net, pred, forc, lab, pat, val):
        return jax.value_and_grad(network_loss, has_aux=True)(
            net, pred, forc, lab, pat, val, n_patches, loss_cfg, model_cfg, activation)

    return jax.vmap(one)(nets, predictors, forcing, labels, patch, valid)
