"""Batched rollouts of DALEC over time for many pixels.

The scan runs over time with all pixels of a batch vectorised inside each step (time-major),
so one step is a handful of fused elementwise kernels over the pixel axis.
Two paths share the step:

* :func:`simulate` / :func:`rollout` with ``outputs=None``: all 44 diagnostics;
* :func:`rollout` with ``outputs=(names...)``: only those series are kept (the rest is
  dead code that XLA drops), plus optional running sums; this is what training uses.

``checkpoint_every=k`` rematerialises the scan in segments of k steps, so the memory of a
gradient grows with ~T/k + k steps instead of T (k ~ sqrt(T) minimises it).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp

from differland_dist.model import acm
from differland_dist.model.dalec import prepare, step
from differland_dist.model.parameters import OUTPUTS
from differland_dist.model.structures import Fluxes, Forcing, Parameters, Pools


def _time_major(forcing: Forcing, shape, dtype=jnp.float32) -> Forcing:
    """Fields of shape (P, T), (P, 1) (per pixel) or (T,) (per step) -> (T, P)."""
    P, T = shape
    out = []
    for x in forcing:
        x = jnp.asarray(x, dtype)
        x = x[None, :] if x.ndim == 1 else x
        out.append(jnp.broadcast_to(x, (P, T)).T)
    return Forcing(*out)


def rollout(params: Parameters, forcing: Forcing, *, outputs: Sequence[str] | None = None,
            sums: Sequence[str] = (), checkpoint_every: int = 0, closed_budget: bool = True,
            unroll: int = 1):
    """Run DALEC for P pixels over T steps.

    Args:
      params: physical parameters, fields of shape (P,).
      forcing: fields of shape (P, T), (P, 1) for per-pixel constants or (T,) per step.
      outputs: names of the diagnostics to keep per step (None: all 44).
      sums: names of diagnostics whose sum over time is accumulated (P,) without keeping the
        series (the EDC term's flux sums).
      checkpoint_every: segment length for rematerialisation under autodiff (0: none).
      closed_budget: see :func:`differland_dist.model.dalec.step`.
      unroll: steps unrolled per loop iteration (a speed knob).

    Returns:
      (final_pools: Pools of (P,), series: dict name -> (P, T), totals: dict name -> (P,)).
    """
    names = tuple(OUTPUTS) if outputs is None else tuple(outputs)
    pools, ys, totals = _scan(params, forcing, names, tuple(sums), checkpoint_every, closed_budget, unroll)
    series = {n: ys[:, :, i].T for i, n in enumerate(names)}
    return pools, series, totals


def _scan(params: Parameters, forcing: Forcing, names: tuple[str, ...], sums: tuple[str, ...],
          checkpoint_every: int, closed_budget: bool, unroll: int):
    """The time loop: (final pools, outputs stacked (T, P, len(names)), time sums)."""
    pools0 = params.initial_pools
    P = jnp.shape(pools0.labile)[0]
    T = jnp.shape(forcing.days)[-1]
    # float32 normally; float64 when the caller passes float64 (x64 gradient checks)
    dtype = jnp.result_type(jnp.asarray(pools0.labile).dtype, jnp.float32)
    ftm = _time_major(forcing, (P, T), dtype)
    consts = prepare(params)
    dayl = acm.day_length(ftm.lat, ftm.doy)  # depends on forcing only: one vectorised pass

    def body(carry, xs):
        pools, acc = carry
        f, dl = xs
        nxt, fl = step(pools, f, params, closed_budget=closed_budget, constants=consts, dayl=dl)
        fd = fl._asdict()
        acc = tuple(a + fd[n] for a, n in zip(acc, sums))
        # one (P, k) block per step: a single contiguous write instead of k strided ones
        return (nxt, acc), jnp.stack([fd[n] for n in names], axis=-1)

    acc0 = tuple(jnp.zeros((P,), dtype) for _ in sums)
    carry0 = (Pools(*(jnp.asarray(x, dtype) for x in pools0)), acc0)
    xs = (ftm, dayl)
    k = int(checkpoint_every)
    if k <= 0 or k >= T:
        carry, ys = jax.lax.scan(body, carry0, xs, unroll=unroll)
    else:
        n_seg, rem = divmod(T, k)
        head = jax.tree.map(lambda a: a[: n_seg * k].reshape((n_seg, k) + a.shape[1:]), xs)

        @jax.checkpoint
        def segment(carry, seg_xs):
            return jax.lax.scan(body, carry, seg_xs, unroll=unroll)

        carry, ys = jax.lax.scan(segment, carry0, head)
        ys = ys.reshape((n_seg * k,) + ys.shape[2:])
        if rem:
            tail = jax.tree.map(lambda a: a[n_seg * k:], xs)
            carry, ys_tail = jax.lax.scan(body, carry, tail, unroll=unroll)
            ys = jnp.concatenate([ys, ys_tail], axis=0)
    pools, acc = carry
    return pools, ys, dict(zip(sums, acc))


def default_checkpoint_every(n_steps: int) -> int:
    """~sqrt(T): the segment length that minimises gradient memory."""
    return max(1, int(round(math.sqrt(n_steps))))


@partial(jax.jit, static_argnames=("closed_budget",))
def simulate(forcing, dalec_params, pheno_params, initial_pools, closed_budget: bool = True):
    """All 44 diagnostics from arrays.

    Args:
      forcing: (P, T, 17) float32 in the golden-file column order.
      dalec_params: (P, 31), pheno_params: (P, 2), initial_pools: (P, 7), physical values.

    Returns:
      final_pools (P, 7), outputs (P, T, 44) in ``parameters.OUTPUTS`` order.
    """
    params = Parameters.from_arrays(dalec_params, pheno_params, initial_pools)
    pools, ys, _ = _scan(params, Forcing.from_array(forcing), tuple(OUTPUTS), (), 0, closed_budget, 1)
    return pools.stack(), jnp.transpose(ys, (1, 0, 2))


def outputs_as_fluxes(outputs) -> Fluxes:
    """(..., 44) array -> Fluxes of (...) arrays."""
    return Fluxes(*(outputs[..., i] for i in range(len(OUTPUTS))))
