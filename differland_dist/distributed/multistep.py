"""Many optimizer updates in one worker call (``training.updates_per_call`` = K).

The paper's protocol takes one small step (~320 pixels) per update, ~193,000 of them in
sequence: with one update per call the Ray round trip, the driver's sum and the optimizer
update cost more than the kernel. With K > 1 the single worker receives the network, the
optimizer state and the calls of the next n ≤ K steps, and runs them in one compiled
program, a ``lax.scan`` over the calls: each call's loss and gradient (the shard's own
per-call function) is added in call order to its step's gradient, and at a step's last call
the optax update (:func:`apply_update`, the driver's own) is applied. The driver hears back
every n updates: it records each step, evaluates, checkpoints and applies the non-finite
policy on the same step boundaries as with K = 1 (a chunk never crosses an evaluation or a
checkpoint: :func:`chunk_length`).

Non-finite steps: inside the program a step whose loss or gradient is not finite is not
applied and no later step of the chunk is either; the driver takes the network and
optimizer after the last good step, records the bad one and decides as with K = 1
(:func:`~differland_dist.distributed.policy.on_nonfinite`); the rest of the chunk is
recomputed in the next call.

Bits: the per-call loss and gradient, the fixed-order gradient sum and the update are the
same operations as with K = 1, compiled into one program; on CPU (JAX 0.10) the result is
the same bits as K single updates (tests/test_multistep.py compares whole runs). Where a
backend's compiler fuses them differently that would no longer hold, but a run stays
bit-reproducible with itself for a given K, resumed or with a replaced worker: the chunks
depend only on the step, K and the cadences, and padding calls (the program's length is
rounded up, :func:`padded_length`) are skipped, not computed.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Sequence

import numpy as np

from differland_dist.errors import ConfigError

log = logging.getLogger(__name__)


def check_config(config) -> None:
    """ConfigError unless ``training.updates_per_call`` fits the run: K > 1 runs every
    update on one worker, so it needs ``ray.workers`` = 1."""
    k, w = config.training.updates_per_call, config.ray.workers
    if k > 1 and w != 1:
        raise ConfigError(f"training.updates_per_call={k} runs {k} updates on one worker: it needs "
                          f"ray.workers=1, got {w} (or set training.updates_per_call=1)")


def chunk_length(step: int, steps: int, k: int, eval_every: int, checkpoint_every: int) -> int:
    """Updates of the next call from ``step`` (steps done): at most ``k``, never past the
    run's end, the next evaluation or the next checkpoint."""
    n = min(int(k), int(steps) - int(step))
    for every in (eval_every, checkpoint_every):
        if every:
            n = min(n, every - step % every)
    return max(1, n)


def apply_update(tx, unravel, flat, grad, opt_state, lr_scale):
    """One optax update of the flat network (float32 (P,)) by the flat step gradient,
    its size scaled by ``lr_scale``: (new flat, new optimizer state). The driver (K = 1) and
    the scanned program (K > 1) both call this."""
    # imported here: distributed/worker.py imports this module before the runtime env set JAX_PLATFORMS
    import jax
    import optax
    from jax.flatten_util import ravel_pytree

    net = unravel(flat)
    updates, opt_state = tx.update(unravel(grad), opt_state, net)
    updates = jax.tree.map(lambda u: u * lr_scale, updates)
    return ravel_pytree(optax.apply_updates(net, updates))[0], opt_state


def state_leaves(opt_state) -> list[np.ndarray]:
    """The optimizer state as NumPy arrays in pytree order (what travels to the worker)."""
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(opt_state)]


def state_of_leaves(template, leaves: Sequence[np.ndarray]):
    """Inverse of :func:`state_leaves` given a state of the same structure (``tx.init``)."""
    import jax
    import jax.numpy as jnp

    ref, treedef = jax.tree.flatten(template)
    if len(ref) != len(leaves):
        raise ValueError(f"optimizer state of {len(leaves)} arrays, expected {len(ref)}")
    return jax.tree.unflatten(treedef, [jnp.asarray(x, jnp.asarray(r).dtype) for x, r in zip(leaves, ref)])


class Plan(NamedTuple):
    """The calls of n steps in order (lists of patch ids), which call ends its step, each
    step's patches and its number of calls."""

    calls: list[list[int]]
    last: list[bool]
    patches: list[list[int]]
    n_calls: list[int]


def plan(step_calls, n: int) -> Plan:
    """``step_calls(i)``: (patches, calls) of step i of the chunk, i < ``n``."""
    calls, last, patches, n_calls = [], [], [], []
    for i in range(n):
        ps, cl = step_calls(i)
        patches.append(list(ps))
        n_calls.append(len(cl))
        calls += [list(c) for c in cl]
        last += [False] * (len(cl) - 1) + [True]
    return Plan(calls, last, patches, n_calls)


class Result(NamedTuple):
    """What one call of n updates returns: the network (P,) and optimizer state after the
    last applied step; per call its loss terms (floats, ``loss`` the total, as
    :meth:`Shard.compute` gives them); per step whether it was finite; the first non-finite
    step's gradient (or None); compute seconds; pixel-months."""

    flat: np.ndarray
    opt_leaves: list
    terms: list[dict]
    finite: list[bool]
    bad_grad: np.ndarray | None
    seconds: float
    pixel_months: int


def scan_updates(call_fn, tx, unravel):
    """The compiled program of a chunk: ``f(flat, opt_state, lr_scale, pred (C, R, k),
    forcing (C, F, R, T), label_stack (C, L, R, T), patch (C, R), valid (C, R), last (C,),
    live (C,), mean, std)`` -> (flat, opt_state, totals (C,), terms {name: (C,)}, finite
    (C,) (each step's own, at its last call), first bad step's gradient (P,)). ``last``:
    the call ends its step; ``live``: a real call (False: padding, skipped).
    ``call_fn``: the shard's per-call loss and flat gradient (:meth:`Shard.call_function`)."""
    import jax
    import jax.numpy as jnp

    def program(flat, opt_state, lr_scale, pred, forcing, stack, patch, valid, last, live, mean, std):
        zeros = jnp.zeros_like(flat)
        test = jnp.asarray(False)
        shapes = jax.eval_shape(call_fn, unravel(flat), pred[0], forcing[0], stack[0], patch[0],
                                valid[0], mean, std, test)

        def body(carry, xs):
            flat, opt_state, acc, step_ok, ok, bad = carry
            p, f, s, pa, v, is_last, is_live = xs
            # a padding call (the program's length is rounded up: fewer compilations) costs nothing
            (total, terms), g = jax.lax.cond(
                is_live, lambda: call_fn(unravel(flat), p, f, s, pa, v, mean, std, test),
                lambda: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes))
            acc = acc + g  # the driver's fixed-order sum: zeros + g1 + g2 ...
            step_ok = step_ok & jnp.isfinite(total)
            finite = step_ok & jnp.all(jnp.isfinite(acc))
            apply = is_last & ok & finite
            flat, opt_state = jax.lax.cond(
                apply, lambda: apply_update(tx, unravel, flat, acc, opt_state, lr_scale),
                lambda: (flat, opt_state))
            bad = jnp.where(is_last & ok & ~finite, acc, bad)
            ok = ok & (finite | ~is_last)
            acc = jnp.where(is_last, zeros, acc)
            step_ok = step_ok | is_last
            return (flat, opt_state, acc, step_ok, ok, bad), (total, terms, finite)

        carry0 = (flat, opt_state, zeros, jnp.asarray(True), jnp.asarray(True), zeros)
        (flat, opt_state, _, _, _, bad), (totals, terms, finite) = jax.lax.scan(
            body, carry0, (pred, forcing, stack, patch, valid, last, live))
        return flat, opt_state, totals, terms, finite, bad

    return jax.jit(program)


def padded_length(n_calls: int) -> int:
    """The compiled program's number of calls for ``n_calls``: the next of 1, 2, 3, 4, 6, 8,
    12, 16, ... (at most a third padding, a handful of compilations per run)."""
    c = 1
    while True:
        for x in (c, c + c // 2) if c >= 2 else (c,):
            if x >= n_calls:
                return x
        c *= 2


class Updater:
    """A worker's runner of chunks: its shard's calls packed into stacked arrays and the
    scanned program, compiled once per number of calls."""

    def __init__(self, shard, tx, unravel, opt_template):
        self.shard, self.tx, self.unravel = shard, tx, unravel
        self.opt_template = opt_template
        self._program = None
        self._buffers: dict = {}

    def _pack(self, calls, C: int):
        """Stacked (C, ...) predictors, forcing, label stack, patch index and valid of
        ``calls`` (C ≥ their number; the rest is padding the program skips); each call
        packed straight into its slice (one copy of each patch)."""
        from differland_dist.distributed.shard import aligned_empty

        first = self.shard.pack(calls[0])
        key = (C,) + tuple((a.shape, a.dtype.str) for a in first[:3])
        bufs = self._buffers.get(key)
        if bufs is None:  # zeros: the padding slices hold finite values
            self._buffers = {key: [aligned_empty((C,) + a.shape, a.dtype) for a in first[:3]]}
            bufs = self._buffers[key]
            for b in bufs:
                b[...] = 0
        patch = np.zeros((C,) + first[3].shape, first[3].dtype)
        valid = np.zeros((C,) + first[4].shape, first[4].dtype)
        for i, a in enumerate(first[:3]):
            bufs[i][0] = a
        patch[0], valid[0] = first[3], first[4]
        for c in range(1, len(calls)):
            _, _, _, patch[c], valid[c] = self.shard.pack(calls[c], out=tuple(b[c] for b in bufs))
        return (*bufs, patch, valid)

    def run(self, flat, opt_leaves, lr_scale: float, calls, last, mean, std) -> Result:
        import time

        import jax
        import jax.numpy as jnp

        t0 = time.perf_counter()
        C = padded_length(len(calls))
        arrays = self._pack(calls, C)
        last = np.asarray(list(last) + [False] * (C - len(calls)), bool)
        live = np.arange(C) < len(calls)
        if self._program is None:  # after the first read: the call function needs the labels' layout
            self._program = scan_updates(self.shard.call_function(True), self.tx, self.unravel)
        out = self._program(jnp.asarray(flat, jnp.float32), state_of_leaves(self.opt_template, opt_leaves),
                            jnp.asarray(lr_scale, jnp.float32), *(jax.device_put(x) for x in arrays),
                            jnp.asarray(last), jnp.asarray(live), jnp.asarray(mean, jnp.float32),
                            jnp.asarray(std, jnp.float32))
        flat, opt_state, totals, terms, finite, bad = jax.device_get(out)
        per_call = []
        for c in range(len(calls)):
            t = {k: float(v[c]) for k, v in terms.items()}
            t["loss"] = float(totals[c])
            per_call.append(t)
        steps_finite = [bool(f) for f, is_last in zip(finite, last) if is_last]
        return Result(np.asarray(flat), state_leaves(opt_state), per_call, steps_finite,
                      None if all(steps_finite) else np.asarray(bad), time.perf_counter() - t0,
                      self.shard.pixel_months([p for c in calls for p in c]))


def step_terms(plan_: Plan, per_call: Sequence[dict]) -> list[dict]:
    """Each step's loss terms: its calls' floats summed in call order (as the driver sums
    a step's calls with K = 1)."""
    out, cur = [], {}
    for t, is_last in zip(per_call, plan_.last):
        for k, v in t.items():
            cur[k] = cur.get(k, 0.0) + v
        if is_last:
            out.append(cur)
            cur = {}
    return out


def run_chunk(call, cut, state, n: int, training, train_patches, sizes: dict, n_time: int, standardizer):
    """The driver's side of ``n`` updates in one call of the single worker: (the state after
    the updates that were finite, their records and the first non-finite one's, which values
    were not finite or None). ``call``: the pool's call; ``cut``: patches -> calls."""
    # imported here: the worker imports this module for :class:`Updater` alone
    import dataclasses
    import time

    from differland_dist.distributed.policy import step_patches
    from differland_dist.distributed.records import timed, update_records

    order = training.seed if training.order_seed is None else training.order_seed

    def step_calls(i):
        ps = step_patches(train_patches, state.step + i, training.patches_per_step, order)
        return ps, cut(ps)

    chunk = plan(step_calls, n)
    ahead = [p for i in range(n, min(2 * n, training.steps - state.step)) for p in step_calls(i)[0]]
    t0 = time.perf_counter()
    mean, std = (np.asarray(x).astype(np.float32) for x in standardizer[1:])
    job = (state.flat, state_leaves(state.opt_state), state.lr_scale, chunk.calls, chunk.last, mean, std)
    res = Result(*call("update", {0: job}, {0: {"prefetch": ahead}})[0])
    wall, t1 = time.perf_counter() - t0, time.perf_counter()
    good = res.finite.index(False) if res.bad_grad is not None else n
    pm = [sum(sizes[p] for p in ps) * n_time for ps in chunk.patches]
    recs = [timed(rec, t0, t1, n) for rec in update_records(
        state, chunk, res, step_terms(chunk, res.terms), good, n, wall, pm)]
    after = dataclasses.replace(state, flat=res.flat, opt_state=state_of_leaves(state.opt_state, res.opt_leaves),
                                step=state.step + good, nonfinite_in_a_row=0 if good else state.nonfinite_in_a_row)
    return after, recs, (recs[-1]["nonfinite"] if good < n else None)
