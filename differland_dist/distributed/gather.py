"""One round of calls on the workers and the fixed-order sum of their results; the
training pixels' standardisation from the workers' per-patch sums.

The calls are dealt round-robin (:func:`~differland_dist.distributed.policy.deal`); each
worker answers its calls in order and the results are put back in call order, so the sum
(:func:`ordered_sum`) is the same bits whatever worker computed which call."""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Sequence

import numpy as np

from differland_dist.distributed.policy import deal
from differland_dist.errors import DifferlandError
from differland_dist.network.standardize import Standardizer


class Gathered(NamedTuple):
    """Per call of a round, in call order: (terms, gradient); the round's wall time, its
    slowest worker's compute time, its pixel-months; per worker: compute seconds and calls."""

    by_call: list
    wall: float
    compute_s: float
    pixel_months: int
    worker_seconds: tuple = ()
    worker_calls: tuple = ()


def gather(pool, cut: Callable[[Sequence[int]], list[list[int]]], patches: Sequence[int], flat,
           mean: np.ndarray, std: np.ndarray, with_grad: bool, test: bool,
           prefetch: Sequence[int] = ()) -> Gathered:
    """``patches`` cut into calls (``cut``) and computed by ``pool``'s workers with the
    network ``flat`` and the float32 standardisation ``mean``, ``std``; ``prefetch``: the
    patches that come next (each worker starts reading those of its next calls)."""
    # imported here: Ray loads only once a cluster is joined (distributed/pool.py)
    import ray

    W = len(pool)
    ref = ray.put(flat)
    cl = cut(patches)
    dealt = deal(len(cl), W)
    ahead = {}
    if prefetch:
        nxt = cut(prefetch)
        ahead = {w: [p for c in idx for p in nxt[c]] for w, idx in deal(len(nxt), W).items()}
    jobs = {w: (ref, [cl[c] for c in idx], mean, std, with_grad, test) for w, idx in dealt.items()}
    kwargs = {w: {"prefetch": ahead[w]} for w in dealt if ahead.get(w)}
    t0 = time.perf_counter()
    res = pool.call("compute", jobs, kwargs)
    wall = time.perf_counter() - t0
    by_call: list = [None] * len(cl)
    compute_s = 0.0
    pm = 0
    for w, (items, secs, pms) in res.items():
        compute_s = max(compute_s, secs)
        pm += pms
        for c, (ids, terms, grad) in zip(dealt[w], items):
            if list(ids) != cl[c]:
                raise DifferlandError(f"worker {w} answered call {c} with patches {list(ids)}, "
                                      f"expected {cl[c]}")
            by_call[c] = (terms, grad)
    return Gathered(by_call, wall, compute_s, pm, tuple(r[1] for r in res.values()),
                    tuple(len(dealt.get(w, ())) for w in range(W)))


def ordered_sum(by_call, with_grad: bool = True) -> tuple[np.ndarray | None, dict[str, float]]:
    """(gradient, loss terms) summed in call order (float32 gradient; None without)."""
    grad = np.zeros_like(by_call[0][1], dtype=np.float32) if with_grad else None
    terms: dict[str, float] = {}
    for t, g in by_call:
        if with_grad:
            grad = grad + g
        for k, v in t.items():
            terms[k] = terms.get(k, 0.0) + v
    return grad, terms


def fit_standardizer(pool, train_patches: Sequence[int], names: Sequence[str]) -> Standardizer:
    """The training pixels' standardisation of ``names`` ([hemisphere, predictors...]), from
    per-patch sums computed by ``pool``'s workers and added in patch order (independent of
    the number of workers)."""
    train = sorted(int(p) for p in train_patches)
    W = len(pool)
    jobs = {w: (train[w::W],) for w in range(W) if train[w::W]}
    per_patch = {p: v for r in pool.call("predictor_sums", jobs).values() for p, v in r.items()}
    n, s, ss = 0, 0.0, 0.0
    for p in sorted(per_patch):
        k, a, b = per_patch[p]
        n, s, ss = n + k, s + a, ss + b
    return Standardizer.from_sums(names, n, s, ss)
