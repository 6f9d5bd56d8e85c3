"""What the calibration loop carries from step to step: :class:`TrainState`, the
:class:`Snapshot` a rollback returns to, the best dev network, the words for a non-finite
step and what the non-finite policy's decisions do to the state."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from differland_dist.distributed.optim import make_optimizer
from differland_dist.network.mlp import init_network


@dataclass
class TrainState:
    flat: np.ndarray                 # network parameters, flattened (float32)
    opt_state: Any                   # optax state (pytree of jax arrays)
    step: int                        # steps completed
    lr_scale: float = 1.0            # lowered by on_nonfinite = reduce_lr / rollback
    nonfinite_in_a_row: int = 0
    skipped: list[int] = field(default_factory=list)
    reinitialised: int = 0           # fresh starts by on_nonfinite = reinitialise (seeds the next)


class Snapshot(NamedTuple):
    """The state at the last checkpoint (or fresh start): what ``on_nonfinite = rollback``
    returns to. ``flat`` is a copy (the loop's array moves on)."""

    step: int
    flat: np.ndarray
    opt_state: Any
    lr_scale: float

    @classmethod
    def of(cls, state: TrainState) -> "Snapshot":
        return cls(state.step, state.flat.copy(), state.opt_state, state.lr_scale)


class Best(NamedTuple):
    """The best dev evaluation so far (``training.keep = best_dev``): its step, dev loss and
    network (flat, a copy)."""

    step: int
    dev_loss: float
    flat: np.ndarray


def describe_nonfinite(loss: float, grad: np.ndarray) -> str:
    """Which values are not finite, e.g. "loss is +inf; gradient has 3 NaN of 1200 values"."""
    parts = []
    if not math.isfinite(loss):
        parts.append(f"loss is {'NaN' if math.isnan(loss) else '+inf' if loss > 0 else '-inf'}")
    g = np.asarray(grad)
    counts = [(int(np.isnan(g).sum()), "NaN"), (int(np.isposinf(g).sum()), "+inf"),
              (int(np.isneginf(g).sum()), "-inf")]
    bad = [f"{n} {what}" for n, what in counts if n]
    if bad:
        parts.append(f"gradient has {', '.join(bad)} of {g.size} values")
    return "; ".join(parts) or "all finite"


def after_nonfinite(decision, state: TrainState, last: Snapshot | None) -> TrainState:
    """The state after a non-finite step that ``decision`` (:func:`~differland_dist.
    distributed.policy.on_nonfinite`: skip, reduce_lr or rollback to ``last``) leaves to run."""
    if decision.action == "skip":
        return dataclasses.replace(state, step=state.step + 1, nonfinite_in_a_row=decision.in_a_row,
                                   skipped=state.skipped + [state.step + 1])
    if decision.action == "reduce_lr":
        return dataclasses.replace(state, lr_scale=decision.lr_scale, nonfinite_in_a_row=decision.in_a_row)
    if decision.action == "rollback":
        return TrainState(last.flat.copy(), last.opt_state, last.step, decision.lr_scale,
                          decision.in_a_row, state.skipped, state.reinitialised)
    raise ValueError(f"not a state change: {decision.action!r}")


def fresh_start(config, n_predictors: int, state: TrainState, in_a_row: int) -> TrainState:
    """A fresh network (key: training.seed folded with the count of fresh starts, so every
    start differs and a resumed run draws the same) and optimizer, from step 0: the
    published restart when an epoch's loss is NaN (``calibration.py``)."""
    n = state.reinitialised + 1
    key = jax.random.fold_in(jax.random.PRNGKey(config.training.seed), n)
    net = init_network(key, n_predictors, config.network)
    flat = np.asarray(ravel_pytree(net)[0])
    opt_state = make_optimizer(config.optimizer, config.training.steps).init(net)
    return TrainState(flat, opt_state, 0, 1.0, in_a_row, state.skipped, n)
