"""Which patches a step trains on, how they are cut into calls, and which worker computes each.

Per-patch results are bit-identical only for the same call: a patch's gradient computed in
a call of 2 patches differs from the same patch alone by ~1e-4 relative (XLA vectorises the
vmapped patch axis differently), so a call's contents must not depend on the number of
workers. A step's patches are therefore cut into calls of ``group`` patches in the step's
order (the last call padded), and the calls are dealt round-robin to the workers: every
worker gets the same number of calls, ±1, whatever the worker count, and each patch's
gradient is the same bits on any worker. Workers stream the patches of their calls from
the store (:class:`differland_dist.data.reader.PatchCache`); see docs/architecture.md for
why this beats owning a fixed share of the patches.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


def step_patches(train_patches: np.ndarray, step: int, per_step: int, seed: int) -> list[int]:
    """The patches of ``step`` (0-based): epochs are seeded permutations of the train patches."""
    n = len(train_patches)
    per_step = min(per_step, n)
    steps_per_epoch = max(1, n // per_step)
    epoch, k = divmod(step, steps_per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [int(train_patches[i]) for i in perm[k * per_step:(k + 1) * per_step]]


def calls(patches: Sequence[int], group: int) -> list[list[int]]:
    """``patches`` cut into calls of ``group`` (the last one shorter), in order."""
    g = max(1, int(group))
    ids = [int(p) for p in patches]
    return [ids[i:i + g] for i in range(0, len(ids), g)]


def deal(patches: Sequence[int], group: int, workers: int) -> dict[int, list[int]]:
    """{worker: its patches}: the calls of ``patches`` dealt round-robin (call c to worker
    c mod ``workers``), each worker's calls concatenated in order. Workers without a call are
    left out. Cutting a worker's list into calls of ``group`` gives back exactly its calls
    (only the overall last call can be short, and it is its worker's last)."""
    out: dict[int, list[int]] = {}
    for c, ids in enumerate(calls(patches, group)):
        out.setdefault(c % max(1, int(workers)), []).extend(ids)
    return out


class NonFiniteDecision(NamedTuple):
    """What to do after a step whose loss or gradient is not finite.

    ``action``: ``"skip"`` (count the step, leave network and optimizer as they are),
    ``"reduce_lr"`` (retry the same step at ``lr_scale``), ``"rollback"`` (restart from the
    last checkpoint at ``lr_scale``, the paper's restart-on-NaN) or ``"stop"`` (give up:
    more than ``max_nonfinite`` in a row). ``in_a_row`` is the new count of consecutive
    non-finite steps."""

    action: str
    in_a_row: int
    lr_scale: float


def on_nonfinite(action: str, in_a_row: int, max_in_a_row: int, lr_scale: float,
                 checkpoint_lr_scale: float, lr_reduction: float) -> NonFiniteDecision:
    """The decision after one more non-finite step (``in_a_row`` counted before it).

    The counters live in the run's :class:`~differland_dist.distributed.trainer.TrainState`
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
    raise ValueError(f"training.on_nonfinite: {action!r}, expected skip, reduce_lr or rollback")
