"""Batched rollouts of DALEC over time for many pixels.

The scan runs over time with all pixels of a batch vectorised inside each step (time-major),
so one step is a few dozen fused elementwise kernels over the pixel axis, and each kept
diagnostic comes out as its own (T, P) array, written one contiguous row per step.
Three entry points share the step:

* :func:`simulate_series`: all 44 diagnostics as named (T, P) series (``Fluxes``), exactly as
  the time loop writes them; the fast path for forward runs;
* :func:`simulate`: the same in the published (P, T, 44) layout (one transposition more);
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
from differland_dist.vocabulary.dalec_io import OUTPUTS
from differland_dist.model.structures import Fluxes, Forcing, Parameters, Pools


def _dtype(params: Parameters):
    """float32 normally; float64 when the caller passes float64 (x64 gradient checks)."""
    return jnp.result_type(jnp.asarray(params.initial_pools.labile).dtype, jnp.float32)


def _time_major(forcing: Forcing, params: Parameters) -> Forcing:
    """Fields of shape (P, T), (P, 1) (per pixel) or (T,) (per step) -> (T, P)."""
    P, T = jnp.shape(params.initial_pools.labile)[0], jnp.shape(forcing.days)[-1]
    dtype = _dtype(params)
    out = []
    for x in forcing:
        x = jnp.asarray(x, dtype)
        x = x[None, :] if x.ndim == 1 else x
        out.append(jnp.broadcast_to(x, (P, T)).T)
    return Forcing(*out)


def _forcing_from_array(met, params: Parameters) -> Forcing:
    """(P, T, 17) golden-layout forcing -> time-major (T, P) fields, in one transposition.

    One (P, T, 13) -> (13, T, P) transpose reads the input once; :func:`_time_major` on the
    fields of such an array would stream the whole interleaved array once per field.
    """
    n = len(Forcing._fields)
    return Forcing(*jnp.transpose(jnp.asarray(met, _dtype(params))[..., :n], (2, 1, 0)))


def rollout(params: Parameters, forcing: Forcing, *, outputs: Sequence[str] | None = None,
            sums: Sequence[str] = (), checkpoint_every: int = 0, closed_budget: bool = True,
            unroll: int = 1, pixel_block: int = 0, time_major: bool = False):
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
      pixel_block: if > 0 and P is larger, run blocks of this many pixels one after another
        (a speed knob for CPUs: a step's ~100 intermediates then stay in cache).
      time_major: return the series as (T, P), as the loop writes them, instead of (P, T).

    Returns:
      (final_pools: Pools of (P,), series: dict name -> (P, T) (or (T, P)), totals: dict
      name -> (P,)).
    """
    names = tuple(OUTPUTS) if outputs is None else tuple(outputs)
    pools, ys, totals = _blocked_scan(params, forcing, names, tuple(sums), checkpoint_every,
                                      closed_budget, unroll, pixel_block)
    series = {n: (y if time_major else y.T) for n, y in zip(names, ys)}
    return pools, series, totals


def _blocked_scan(params: Parameters, forcing: Forcing, names: tuple[str, ...], sums: tuple[str, ...],
                  checkpoint_every: int, closed_budget: bool, unroll: int, block: int):
    """:func:`_scan` over blocks of ``block`` pixels in sequence (``lax.map``); same results."""
    P = jnp.shape(params.initial_pools.labile)[0]
    if block <= 0 or P <= block:
        return _scan(params, _time_major(forcing, params), names, sums, checkpoint_every,
                     closed_budget, unroll)
    nb = -(-P // block)
    block = -(-P // nb)  # even blocks: 320 pixels run as 2 x 160, not 2 x 256 with padding
    pad = nb * block - P

    leaves, treedef = jax.tree_util.tree_flatten((params, forcing))
    # leaves with a leading pixel axis are split into blocks; per-step (T,) forcing is shared
    is_pp = [jnp.ndim(x) >= 1 and jnp.shape(x)[0] == P for x in leaves]

    def split(x):
        x = jnp.asarray(x)
        if pad:  # repeat the last pixel; its results are dropped
            x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)
        return x.reshape((nb, block) + x.shape[1:])

    blocked = [split(x) for x, b in zip(leaves, is_pp) if b]

    def one(blk):
        it = iter(blk)
        pr, fo = jax.tree_util.tree_unflatten(treedef, [next(it) if b else x for x, b in zip(leaves, is_pp)])
        return _scan(pr, _time_major(fo, pr), names, sums, checkpoint_every, closed_budget, unroll)

    pools, ys, totals = jax.lax.map(one, blocked)
    merge = lambda a: a.reshape((nb * block,) + a.shape[2:])[:P]  # noqa: E731
    # (nb, T, block) -> (T, P)
    ys = tuple(jnp.transpose(y, (1, 0, 2)).reshape((y.shape[1], nb * block))[:, :P] for y in ys)
    return jax.tree.map(merge, pools), ys, {k: merge(v) for k, v in totals.items()}


def _scan(params: Parameters, ftm: Forcing, names: tuple[str, ...], sums: tuple[str, ...],
          checkpoint_every: int, closed_budget: bool, unroll: int):
    """The time loop over time-major forcing ``ftm`` (fields (T, P)): (final pools, one (T, P)
    array per name, time sums)."""
    pools0 = params.initial_pools
    P, T = jnp.shape(pools0.labile)[0], jnp.shape(ftm.days)[0]
    dtype = _dtype(params)
    consts = prepare(params)
    dayl = acm.day_length(ftm.lat, ftm.doy)  # depends on forcing only: one vectorised pass

    def body(carry, xs):
        pools, acc = carry
        f, dl = xs
        nxt, fl = step(pools, f, params, closed_budget=closed_budget, constants=consts, dayl=dl)
        fd = fl._asdict()
        acc = tuple(a + fd[n] for a, n in zip(acc, sums))
        # one (P,) row per series and step. Stacking them into a (P, k) block instead costs
        # an interleaving copy of every output and a 3-D transposition at the end.
        return (nxt, acc), tuple(fd[n] for n in names)

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
        ys = tuple(y.reshape((n_seg * k,) + y.shape[2:]) for y in ys)
        if rem:
            tail = jax.tree.map(lambda a: a[n_seg * k:], xs)
            carry, ys_tail = jax.lax.scan(body, carry, tail, unroll=unroll)
            ys = tuple(jnp.concatenate([y, yt], axis=0) for y, yt in zip(ys, ys_tail))
    pools, acc = carry
    return pools, ys, dict(zip(sums, acc))


def default_checkpoint_every(n_steps: int) -> int:
    """~sqrt(T), the segment length that minimises gradient memory; a divisor of T near it
    when there is one (a remainder segment costs an extra copy of the kept series)."""
    root = math.sqrt(n_steps)
    divisors = [d for d in range(2, n_steps) if n_steps % d == 0 and root / 2 <= d <= 2 * root]
    if divisors:
        return min(divisors, key=lambda d: abs(d - root))
    return max(1, int(round(root)))


@partial(jax.jit, static_argnames=("closed_budget", "pixel_block"))
def simulate_series(forcing, dalec_params, pheno_params, initial_pools, closed_budget: bool = True,
                    pixel_block: int = 0):
    """All 44 diagnostics from arrays, as named time-major series (the fast forward path).

    Args:
      forcing: (P, T, 17) float32 in the golden-file column order.
      dalec_params: (P, 31), pheno_params: (P, 2), initial_pools: (P, 7), physical values.

    Returns:
      final_pools (P, 7), ``Fluxes`` of (T, P) arrays (``series.gpp[t, p]``).
    """
    params = Parameters.from_arrays(dalec_params, pheno_params, initial_pools)
    names = tuple(OUTPUTS)
    if pixel_block > 0 and jnp.shape(forcing)[0] > pixel_block:
        # blocks split the pixel axis first, then go time-major one by one
        pools, ys, _ = _blocked_scan(params, Forcing.from_array(forcing), names, (), 0,
                                     closed_budget, 1, pixel_block)
    else:
        pools, ys, _ = _scan(params, _forcing_from_array(forcing, params), names, (), 0,
                             closed_budget, 1)
    return pools.stack(), Fluxes(*ys)


@partial(jax.jit, static_argnames=("closed_budget", "pixel_block"))
def simulate(forcing, dalec_params, pheno_params, initial_pools, closed_budget: bool = True,
             pixel_block: int = 0):
    """All 44 diagnostics from arrays, in the published (P, T, 44) layout.

    Same arguments as :func:`simulate_series`; the interleaved layout costs one extra pass
    over the outputs (see docs/benchmarks.md).

    Returns:
      final_pools (P, 7), outputs (P, T, 44) in ``parameters.OUTPUTS`` order.
    """
    pools, series = simulate_series(forcing, dalec_params, pheno_params, initial_pools,
                                    closed_budget, pixel_block)
    return pools, jnp.stack([y.T for y in series], axis=-1)


def outputs_as_fluxes(outputs) -> Fluxes:
    """(..., 44) array -> Fluxes of (...) arrays."""
    return Fluxes(*(outputs[..., i] for i in range(len(OUTPUTS))))
