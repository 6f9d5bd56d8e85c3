"""Probabilistic scores of an ensemble against the observations: CRPS, spread–skill ratio and
the coverage of the ensemble's central intervals, by stream and split (``scores.json``'s
``probabilistic`` entries).

Per compared value (a pixel's observed month, year or static value, after the warm-up, the
evaluation's comparison rules), with the M kept members' values x_1..x_M and the observation y:

* ``crps``: the ensemble CRPS in its fair form (Ferro 2014), the energy form with the
  M(M-1) pair count, unbiased for the distribution the members are drawn from:
  ``mean_i |x_i - y| - sum_{i,j} |x_i - x_j| / (2 M (M - 1))``; for M = 1 the spread term is 0,
  so a one-member (or point) ensemble's CRPS is its MAE. Units of the stream; lower is better.
* ``crps_spread``: the subtracted spread term alone (0 for a point ensemble).
* ``spread_skill``: ``sqrt((M + 1) / M) * sqrt(mean var) / RMSE(ensemble mean)`` (var: the
  members' variance, ddof 1; the factor corrects for a finite ensemble, Fortin et al. 2014).
  1 means the spread is as large as the error; below 1, over-confident. None for M < 2.
* ``coverage_50``, ``coverage_90``: fractions of observations inside the members' central 50 %
  and 90 % intervals (linear-interpolated quantiles, as ``ensemble.zarr``'s q05/q95). The
  members' spread is the network's (seeds), without observation error, so coverage below the
  nominal level is expected where observation noise dominates. Even a calibrated M-member
  ensemble covers only about p (M - 1) / (M + 1) with these quantiles (the observation's rank
  among the M + 1 values is uniform): 0.82 for p = 0.9 and M = 20.
* ``mae``, ``rmse`` of the ensemble mean, ``n`` values and ``members`` M.

Patch-level streams (nbe, fire, ewt: a patch's mean over its observed pixels) are left out
with a note; every value is from the store's split as written (test is every member's test).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import zarr

from differland_dist.data import schema
from differland_dist.data.rows import RowReader
from differland_dist.data.store import PixelStore, zarr_store
from differland_dist.storage.location import Location
from differland_dist.evaluation.streams import SPLITS, comparable, model_side, rules
from differland_dist.storage.location import Location, as_location

log = logging.getLogger(__name__)

INTERVALS = (50, 90)  # central intervals, % of the members' distribution


def crps_fair(ens: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(crps, spread term) per value: ``ens`` (M, n) members, ``obs`` (n,); see the module doc."""
    x = np.sort(np.asarray(ens, np.float64), axis=0)
    M = x.shape[0]
    err = np.abs(x - np.asarray(obs, np.float64)[None]).mean(axis=0)
    if M < 2:
        return err, np.zeros_like(err)
    # sum_{i<j} |x_i - x_j| of sorted members = sum_k x_(k) (2k - M + 1)
    k = np.arange(M, dtype=np.float64)[:, None]
    pairs = (x * (2.0 * k - M + 1.0)).sum(axis=0)
    spread = pairs / (M * (M - 1.0))  # = sum over ordered pairs / (2 M (M - 1))
    return err - spread, spread


class Accumulator:
    """Sums over blocks of values (one split of one stream) that give the scores at the end."""

    def __init__(self, members: int):
        self.M = int(members)
        self.n = 0
        self.sums = dict.fromkeys(("crps", "spread", "abs", "sq", "var",
                                   *(f"in{p}" for p in INTERVALS)), 0.0)

    def add(self, ens: np.ndarray, obs: np.ndarray) -> None:
        """``ens`` (M, n), ``obs`` (n,): values already masked (finite, observed)."""
        if obs.size == 0:
            return
        crps, spread = crps_fair(ens, obs)
        mean = ens.mean(axis=0)
        s = self.sums
        s["crps"] += float(crps.sum())
        s["spread"] += float(spread.sum())
        s["abs"] += float(np.abs(mean - obs).sum())
        s["sq"] += float(((mean - obs) ** 2).sum())
        if self.M > 1:
            s["var"] += float(ens.var(axis=0, ddof=1).sum())
        for p in INTERVALS:
            lo, hi = np.percentile(ens, [50 - p / 2, 50 + p / 2], axis=0)
            s[f"in{p}"] += float(((obs >= lo) & (obs <= hi)).sum())
        self.n += int(obs.size)

    def scores(self) -> dict[str, Any]:
        n, s, M = self.n, self.sums, self.M
        if n == 0:
            return {"n": 0, "members": M}
        rmse = math.sqrt(s["sq"] / n)
        ssr = (math.sqrt((M + 1) / M) * math.sqrt(s["var"] / n) / rmse
               if M > 1 and rmse > 0 else None)
        return {"n": n, "members": M, "crps": s["crps"] / n, "crps_spread": s["spread"] / n,
                "spread_skill": ssr, "mae": s["abs"] / n, "rmse": rmse,
                **{f"coverage_{p}": s[f"in{p}"] / n for p in INTERVALS}}


def ensemble_scores(ens: np.ndarray, obs: np.ndarray) -> dict[str, Any]:
    """The scores of one set of values: ``ens`` (M, n) members, ``obs`` (n,)."""
    acc = Accumulator(np.asarray(ens).shape[0])
    acc.add(np.asarray(ens, np.float64), np.asarray(obs, np.float64))
    return acc.scores()


def score_members(store: PixelStore, outputs: Sequence[str | Location],
                  products: Mapping[str, str | None], warm_up: int,
                  block_pixels: int = 4096) -> dict[str, Any]:
    """stream -> split -> scores (or ``{"note": why}``) of the member outputs ``outputs``
    (inference outputs over ``store``; URL strings without storage options) against its
    observations.

    Args:
      products: stream -> observation product (the config's ``data.products``).
      warm_up: steps left out at the start (the config's ``loss.warm_up``).
    """
    groups = [zarr.open_group(zarr_store(as_location(o)), mode="r", zarr_format=3)
              for o in outputs]
    have_series = set.intersection(*(set(dict(g.attrs).get("series", [])) for g in groups))
    have_vars = set(store.array_names)
    out: dict[str, Any] = {}
    active = {}
    for name, rule in rules().items():
        product = products.get(name)
        if product is None or schema.obs_value_name(product) not in have_vars:
            continue  # not observed: the evaluation says why
        if rule.level != "pixel":
            out[name] = {"note": "patch-level stream: scored by the evaluation only"}
        elif not set(rule.series) <= have_series:
            out[name] = {"note": f"member outputs lack series {sorted(set(rule.series) - have_series)}"}
        else:
            active[name] = (rule, product)
    acc = {name: {sp: Accumulator(len(groups)) for sp in SPLITS} for name in active}
    N, T, spy = store.n_pixels, store.n_time, int(store.steps_per_year)
    obs_vars = sorted({v for _, p in active.values()
                       for v in (schema.obs_value_name(p), schema.obs_weight_name(p))})
    series = sorted({n for rule, _ in active.values() for n in rule.series})
    codes = store.split
    reader = RowReader(store)
    try:
        for a in range(0, N if active else 0, block_pixels):
            s = slice(a, min(a + block_pixels, N))
            P = s.stop - s.start
            v = reader.read(obs_vars, s)
            sims = [{n: np.asarray(g[n][s], np.float64)[:, warm_up:] for n in series} for g in groups]
            for name, (rule, product) in active.items():
                val = np.asarray(v[schema.obs_value_name(product)], np.float64)
                w = np.asarray(v[schema.obs_weight_name(product)], np.float64)
                if val.ndim == 1:  # a static product: one value per pixel
                    val, w = (np.broadcast_to(x[:, None], (P, T)) for x in (val, w))
                ok = np.isfinite(val) & (w > 0)
                val, w = np.where(ok, val, np.nan)[:, warm_up:], np.where(ok, w, 0.0)[:, warm_up:]
                per = [comparable(rule, val, w, model_side(rule, m), spy) for m in sims]
                o, mask = per[0][0], per[0][2]
                ens = np.stack([p[1] for p in per])                      # (M, P, X)
                mask = mask & np.isfinite(o) & np.isfinite(ens).all(axis=0)
                split_of = np.broadcast_to(codes[s][:, None], mask.shape)
                for i, sp in enumerate(SPLITS):
                    m = mask & (split_of == i)
                    acc[name][sp].add(ens[:, m], o[m])
    finally:
        reader.close()
    for name in active:
        out[name] = {sp: acc[name][sp].scores() for sp in SPLITS}
    return out
