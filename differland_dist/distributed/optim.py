"""The optax optimizer of a run, and (de)serialisation of its state as named arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from differland_dist.errors import CheckpointError


def make_optimizer(cfg, total_steps: int):
    """optax transformation from an :class:`OptimizerConfig` (schedule over ``total_steps``)."""
    lr = cfg.learning_rate
    if cfg.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(lr, max(1, total_steps))
    else:
        schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, cfg.warmup_steps),
                                                      max(cfg.warmup_steps + 1, total_steps))
    parts = []
    if cfg.clip_norm:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    if cfg.name in ("adam", "adamw"):
        parts.append(optax.scale_by_adam())
    if cfg.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)


def state_to_arrays(tree, prefix: str) -> dict[str, np.ndarray]:
    """Flatten a pytree to {prefix + keypath: array}; the tree's structure is the template's."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {f"{prefix}{i:04d}{jax.tree_util.keystr(path)}": np.asarray(leaf)
            for i, (path, leaf) in enumerate(leaves)}


def state_from_arrays(template, arrays: dict[str, np.ndarray], prefix: str):
    """Inverse of :func:`state_to_arrays`, given a template of the same structure."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    names = sorted(k for k in arrays if k.startswith(prefix))
    if len(names) != len(leaves):
        raise CheckpointError(f"optimizer state has {len(names)} arrays, expected {len(leaves)} "
                              "(was the optimizer configuration changed?)")
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(arrays[n], dtype=jnp.asarray(l).dtype) for n, l in zip(names, leaves)])
