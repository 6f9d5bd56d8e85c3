"""The calibration loop's decisions: which patches a step trains on, how they are packed into
calls, which worker computes each, what follows a step (evaluate, checkpoint), which dev
network is kept and what a non-finite step leads to. Pure functions: the loop
(:mod:`~differland_dist.distributed.trainer`) only executes what they return.

A call's result is bit-identical only for the same call: the same patches packed in the
same order into the same compiled shape (XLA vectorises a call as a whole, so a patch's
terms computed beside other patches differ from the same patch alone by ~1e-7 relative).
A step's patches are therefore packed into calls in the step's order by a pixel budget that
does not depend on the number of workers (:func:`calls`), and the calls are dealt
round-robin to the workers (:func:`deal`): every worker gets the same number of calls, ±1,
whatever the worker count, each call's loss and gradient are the same bits on any worker,
and the driver sums them in call order. Workers stream the patches of their calls from the
store (:class:`differland_dist.data.reader.PatchCache`); see docs/architecture.md for why
this beats owning a fixed share of the patches.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np


def step_patches(train_patches: np.ndarray, step: int, per_step: int, seed: int,
                 fixed: bool = False) -> list[int]:
    """The patches of ``step`` (0-based): epochs are seeded permutations of the train patches,
    or with ``fixed`` (training.patch_order: fixed, the published loop) the patches in their
    given order every epoch."""
    n = len(train_patches)
    per_step = min(per_step, n)
    steps_per_epoch = max(1, n // per_step)
    epoch, k = divmod(step, steps_per_epoch)
    perm = np.arange(n) if fixed else np.random.default_rng([seed, epoch]).permutation(n)
    return [int(train_patches[i]) for i in perm[k * per_step:(k + 1) * per_step]]


def calls(patches: Sequence[int], sizes: Mapping[int, int], rows: int,
          per_call: int = 0) -> list[list[int]]:
    """``patches`` packed in order into calls of at most ``rows`` pixels (``sizes``: pixels
    of each patch); a call closes when the next patch would not fit. A patch larger than
    ``rows`` is an error of the caller (``rows`` is at least the store's largest patch).
    ``per_call`` > 0 (``training.patches_per_call``): calls of that many patches instead."""
    if per_call:
        return [[int(p) for p in patches[i:i + per_call]] for i in range(0, len(patches), per_call)]
    out: list[list[int]] = []
    used = rows + 1
    for p in patches:
        n = int(sizes[int(p)])
        if n > rows:
            raise ValueError(f"patch {p} has {n} pixels, more than a call's {rows}")
        if used + n > rows:
            out.append([])
            used = 0
        out[-1].append(int(p))
        used += n
    return out


def call_rows(sizes: Sequence[int], per_step: int, cap: int) -> int:
    """Rows of the compiled call: at most ``cap`` pixels, sized so that a step's calls come
    out evenly filled (``sizes``: pixels of every training patch; a step draws ``per_step``
    of them at random).

    Calls of exactly ``cap`` rows leave a step's last call part empty (a step of 3.66 calls'
    worth runs four full calls: 9 % padding). Instead a large step is taken, S = the mean
    plus three standard deviations of a random draw (never more than the largest step), its
    calls n = ceil(S / cap), and rows = S / n plus one largest patch (a call closes when the
    next patch does not fit, so it wastes less than one). A step larger than S (rarer than
    1 in 700) takes one call more. Never fewer rows than the largest patch."""
    s = np.asarray([int(x) for x in sizes] or [1], np.float64)
    k = max(1, min(int(per_step), s.size))
    biggest = int(s.max())
    step_max = int(np.sort(s)[-k:].sum())
    if step_max <= cap:
        return max(step_max, biggest)
    # sd of a sum of k draws without replacement (finite population correction)
    fpc = (s.size - k) / (s.size - 1) if s.size > 1 else 0.0
    large = min(float(step_max), k * s.mean() + 3.0 * np.sqrt(k * fpc) * s.std())
    n = int(np.ceil(large / cap))
    return max(biggest, min(int(cap), int(np.ceil(large / n)) + biggest))


def max_segments(sizes: Sequence[int], rows: int, per_step: int) -> int:
    """The most patches a call of ``rows`` pixels can hold (its smallest patches), at most
    ``per_step``: the static number of patch segments of the compiled call."""
    total, k = 0, 0
    for n in sorted(int(x) for x in sizes):
        if total + n > rows or k >= per_step:
            break
        total, k = total + n, k + 1
    return max(1, k)


def deal(n_calls: int, workers: int) -> dict[int, list[int]]:
    """{worker: its call indices}: call c to worker c mod ``workers``, in order. Workers
    without a call are left out."""
    out: dict[int, list[int]] = {}
    for c in range(int(n_calls)):
        out.setdefault(c % max(1, int(workers)), []).append(c)
    return out


class AfterStep(NamedTuple):
    """What follows a step: a dev evaluation, a checkpoint, and whether it was the last."""

    evaluate: bool
    checkpoint: bool
    done: bool


def after_step(step: int, steps: int, eval_every: int, checkpoint_every: int) -> AfterStep:
    """``step`` (steps completed) of ``steps``: evaluate every ``eval_every`` steps and
    checkpoint every ``checkpoint_every`` (0: never), both at the end."""
    done = step >= steps
    return AfterStep(bool(eval_every and step % eval_every == 0) or done,
                     bool(checkpoint_every and step % checkpoint_every == 0) or done, done)


def keeps(keep: str, dev_loss: float | None, best_loss: float | None) -> bool:
    """Whether a dev loss makes its network the kept one (``training.keep = best_dev``): a
    finite loss below the best so far (``best_loss``; None: none yet)."""
    return (keep == "best_dev" and dev_loss is not None and math.isfinite(dev_loss)
            and (best_loss is None or dev_loss < best_loss))


class NonFiniteDecision(NamedTuple):
    """What to do after a step whose loss or gradient is not finite.

    ``action``: ``"skip"`` (count the step, leave network and optimizer as they are),
    ``"reduce_lr"`` (retry the same step at ``lr_scale``), ``"rollback"`` (restart from the
    last checkpoint at ``lr_scale``), ``"reinitialise"`` (a fresh network and optimizer from
    step 0, the published restart-on-NaN of ``calibration.py``) or ``"stop"`` (give up:
    more than ``max_nonfinite`` in a row). ``in_a_row`` is the new count of consecutive
    non-finite steps."""

    action: str
    in_a_row: int
    lr_scale: float


def on_nonfinite(action: str, in_a_row: int, max_in_a_row: int, lr_scale: float,
                 checkpoint_lr_scale: float, lr_reduction: float) -> NonFiniteDecision:
    """The decision after one more non-finite step (``in_a_row`` counted before it).

    The counters live in the run's :class:`~differland_dist.distributed.state.TrainState`
    and are checkpointed with the optimizer state, so a resumed run decides the same."""
    n = in_a_row + 1
    if n > max_in_a_row:
        return NonFiniteDecision("stop", n, lr_scale)
    if action == "skip":
        return NonFiniteDecision("skip", n, lr_scale)
    if action == "reduce_lr":
        return NonFiniteDecision("reduce_lr", n, lr_scale * lr_reduction)
    if action == "rollback":
        return NonFiniteDecision("rollback", n, min(lr_scale, checkpoint_lr_scale) * lr_reduction)
    if action == "reinitialise":  # the learning rate as configured: a new start, not a retry
        return NonFiniteDecision("reinitialise", n, 1.0)
    raise ValueError(f"training.on_nonfinite: {action!r}, expected skip, reduce_lr, rollback or "
                     "reinitialise")
