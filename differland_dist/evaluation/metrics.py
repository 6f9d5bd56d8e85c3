"""Goodness-of-fit metrics (pure numpy).

For observations o and simulations s (n pairs, both finite):

* ``nse``  = 1 - SSE / SST, SSE = sum (s - o)^2, SST = sum (o - mean o)^2 (Nash-Sutcliffe;
  1 perfect, 0 as good as the observed mean, NaN when SST = 0);
* ``r``    = Pearson correlation; ``r2`` = r^2 (NaN when either side is constant);
* ``rmse`` = sqrt(SSE / n); ``mae`` = mean |s - o|; ``bias`` = mean (s - o);
* ``kge``  = 1 - sqrt((r - 1)^2 + (alpha - 1)^2 + (beta - 1)^2), alpha = sd(s) / sd(o),
  beta = mean(s) / mean(o) (Kling-Gupta efficiency, Gupta et al. 2009; population standard
  deviations; NaN when r is NaN or mean o = 0);
* ``n``    = number of pairs (every metric is NaN when n = 0).

:class:`Moments` holds sufficient statistics that merge exactly across blocks (Chan et al.'s
pairwise update), so the flat metrics of a store are computed block by block in bounded memory.
Views over (unit, time) arrays with a mask: :func:`flat` (all pairs), :func:`spatial` (time
means per unit, then across units), :func:`temporal` (per-unit series, then the median).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

METRICS = ("n", "nse", "kge", "r2", "rmse", "mae", "bias", "r")


def empty_scores() -> dict[str, float]:
    """The metrics of no data: n = 0, everything else NaN."""
    return {"n": 0, **{k: float("nan") for k in METRICS if k != "n"}}


def kge(r, alpha, mean_s, mean_o):
    """Kling-Gupta efficiency from r, alpha = sd(s) / sd(o) and the means (arrays broadcast)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mo = np.asarray(mean_o, np.float64)
        beta = np.where(mo != 0, np.asarray(mean_s, np.float64) / np.where(mo != 0, mo, 1.0), np.nan)
        return 1.0 - np.sqrt((np.asarray(r, np.float64) - 1) ** 2 + (np.asarray(alpha) - 1) ** 2
                             + (beta - 1) ** 2)


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of (obs, sim) pairs: count, means, centred second moments and
    the error sums. Merge with ``+``."""

    n: int = 0
    mean_o: float = 0.0
    mean_s: float = 0.0
    m2_o: float = 0.0     # sum (o - mean o)^2
    m2_s: float = 0.0     # sum (s - mean s)^2
    c_os: float = 0.0     # sum (o - mean o)(s - mean s)
    sse: float = 0.0      # sum (s - o)^2
    sae: float = 0.0      # sum |s - o|
    se: float = 0.0       # sum (s - o)

    @classmethod
    def of(cls, obs, sim, mask=None) -> "Moments":
        """Statistics of the pairs where ``mask`` (default all) and both values are finite."""
        o = np.asarray(obs, np.float64).ravel()
        s = np.asarray(sim, np.float64).ravel()
        ok = np.isfinite(o) & np.isfinite(s)
        if mask is not None:
            ok &= np.asarray(mask, bool).ravel()
        o, s = o[ok], s[ok]
        n = int(o.size)
        if n == 0:
            return cls()
        mo, ms = float(o.mean()), float(s.mean())
        do, ds, e = o - mo, s - ms, s - o
        return cls(n, mo, ms, float(do @ do), float(ds @ ds), float(do @ ds), float(e @ e),
                   float(np.abs(e).sum()), float(e.sum()))

    def __add__(self, other: "Moments") -> "Moments":
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        do, ds = other.mean_o - self.mean_o, other.mean_s - self.mean_s
        f = self.n * other.n / n
        return Moments(n, self.mean_o + do * other.n / n, self.mean_s + ds * other.n / n,
                       self.m2_o + other.m2_o + do * do * f, self.m2_s + other.m2_s + ds * ds * f,
                       self.c_os + other.c_os + do * ds * f, self.sse + other.sse,
                       self.sae + other.sae, self.se + other.se)

    def scores(self) -> dict[str, float]:
        """The metrics (see the module docstring)."""
        if self.n == 0:
            return empty_scores()
        n = self.n
        nse = 1.0 - self.sse / self.m2_o if self.m2_o > 0 else float("nan")
        denom = np.sqrt(self.m2_o * self.m2_s)
        r = float(np.clip(self.c_os / denom, -1.0, 1.0)) if denom > 0 else float("nan")
        return {"n": n, "nse": float(nse),
                "kge": float(kge(r, np.sqrt(self.m2_s / self.m2_o) if self.m2_o > 0 else np.nan,
                                 self.mean_s, self.mean_o)), "r2": r * r, "rmse": float(np.sqrt(self.sse / n)),
                "mae": self.sae / n, "bias": self.se / n, "r": r}


def scores(obs, sim, mask=None) -> dict[str, float]:
    """The metrics of (obs, sim) pairs (where ``mask`` and both finite)."""
    return Moments.of(obs, sim, mask).scores()


def _masked(obs, sim, mask):
    o = np.asarray(obs, np.float64)
    s = np.asarray(sim, np.float64)
    m = np.isfinite(o) & np.isfinite(s)
    if mask is not None:
        m &= np.asarray(mask, bool)
    return np.where(m, o, 0.0), np.where(m, s, 0.0), m


def unit_means(obs, sim, mask=None, min_obs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per unit (row) time means of obs and sim over its observed steps, for the units with at
    least ``min_obs`` observations: two (U',) arrays."""
    o, s, m = _masked(obs, sim, mask)
    cnt = m.sum(axis=1)
    keep = cnt >= max(1, int(min_obs))
    return o.sum(1)[keep] / cnt[keep], s.sum(1)[keep] / cnt[keep]


def row_scores(obs, sim, mask=None) -> dict[str, np.ndarray]:
    """The metrics of every row (unit) of (U, T) arrays, vectorised: name -> (U,) arrays."""
    o, s, m = _masked(obs, sim, mask)
    n = m.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mo = o.sum(1) / n
        ms = s.sum(1) / n
        do = np.where(m, o - mo[:, None], 0.0)
        ds = np.where(m, s - ms[:, None], 0.0)
        e = np.where(m, s - o, 0.0)
        sst, sss, cos, sse = (do * do).sum(1), (ds * ds).sum(1), (do * ds).sum(1), (e * e).sum(1)
        nse = np.where(sst > 0, 1.0 - sse / sst, np.nan)
        den = np.sqrt(sst * sss)
        r = np.where(den > 0, np.clip(cos / np.where(den > 0, den, 1.0), -1, 1), np.nan)
        alpha = np.where(sst > 0, np.sqrt(sss / np.where(sst > 0, sst, 1.0)), np.nan)
        out = {"n": n, "nse": nse, "kge": kge(r, alpha, ms, mo), "r2": r * r, "rmse": np.sqrt(sse / n),
               "mae": np.abs(e).sum(1) / n, "bias": e.sum(1) / n, "r": r}
    empty = n == 0
    for k in METRICS[1:]:
        out[k] = np.where(empty, np.nan, out[k])
    return out


def flat(obs, sim, mask=None) -> dict[str, float]:
    """All observed (unit, step) pairs together."""
    return scores(obs, sim, mask)


def spatial(obs, sim, mask=None, min_obs: int = 1) -> dict[str, float]:
    """Across units, of the time means of each unit's observed steps."""
    mo, ms = unit_means(obs, sim, mask, min_obs)
    return scores(mo, ms)


def temporal(obs, sim, mask=None, min_obs: int = 3) -> dict[str, float]:
    """Each unit's series (units with at least ``min_obs`` observations), then the median over
    units of each metric; ``n`` = observations used, ``n_units`` = units."""
    rs = row_scores(obs, sim, mask)
    return summarize_rows(rs, min_obs)


def summarize_rows(rs: Mapping[str, np.ndarray], min_obs: int = 3) -> dict[str, float]:
    """Median over units (with >= ``min_obs`` observations) of per-unit metrics."""
    keep = np.asarray(rs["n"]) >= max(1, int(min_obs))
    if not keep.any():
        return {**empty_scores(), "n_units": 0}
    out: dict[str, float] = {"n": int(np.asarray(rs["n"])[keep].sum()), "n_units": int(keep.sum())}
    for k in METRICS[1:]:
        v = np.asarray(rs[k], np.float64)[keep]
        v = v[np.isfinite(v)]
        out[k] = float(np.median(v)) if v.size else float("nan")
    return out


def concat_rows(parts: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-unit metric arrays of several blocks."""
    if not parts:
        return {k: np.empty(0) for k in METRICS}
    return {k: np.concatenate([np.asarray(p[k], np.float64) for p in parts]) for k in METRICS}


def recovery(true: np.ndarray, est: np.ndarray, names) -> dict[str, dict[str, float]]:
    """Per parameter (column) recovery: ``r2`` = 1 - SSE/SST of estimated vs true (the 1:1
    line; the NSE of the column), ``r`` (Pearson), ``n``.

    Args:
      true, est: (P, K) arrays; names: K column names.
    """
    true, est = np.asarray(true, np.float64), np.asarray(est, np.float64)
    if true.shape != est.shape or true.ndim != 2 or true.shape[1] != len(names):
        raise ValueError(f"true {true.shape} and est {est.shape} must be (P, {len(names)})")
    out = {}
    for j, name in enumerate(names):
        s = scores(true[:, j], est[:, j])
        out[name] = {"r2": s["nse"], "r": s["r"], "n": s["n"]}
    return out


# -- the paper's conventions (evaluate_performance.py of JianingFang/DifferLand_Global) ------------
def regression(pred: np.ndarray, obs: np.ndarray) -> dict[str, float]:
    """NSE (= sklearn ``r2_score``), RMSE, MAE, r and the observed-on-simulated regression
    (``linregress(pred, obs)``: slope, intercept) of paired 1-D arrays."""
    nan = float("nan")
    if obs.size == 0:
        return {k: nan for k in ("nse", "rmse", "mae", "r", "slope", "intercept")}
    err = pred - obs
    sst = float(np.sum((obs - obs.mean()) ** 2))
    dp = pred - pred.mean()
    vp = float(np.sum(dp ** 2))
    slope = float(np.sum(dp * (obs - obs.mean())) / vp) if vp > 0 else nan
    r = float(np.sum(dp * (obs - obs.mean())) / np.sqrt(vp * sst)) if vp > 0 and sst > 0 else nan
    return {"nse": 1 - float(np.sum(err ** 2)) / sst if sst > 0 else nan,
            "rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err))),
            "r": r, "slope": slope,
            "intercept": float(obs.mean() - slope * pred.mean()) if vp > 0 else nan}


def paper_scores(obs: np.ndarray, sim: np.ndarray) -> dict[str, Any]:
    """The published ``compute_metrics`` of (units, X) observed and simulated arrays (NaN where
    unobserved; units are pixels, or patches for patch-level streams).

    ``flat``: every observed pair; ``spatial``: the units' means over X (NaN-aware); and over
    the units with an observation, the mean / median / std of the per-unit temporal NSE and
    RMSE (a unit whose observations are all equal has NaN NSE and is left out of the mean, as
    ``np.nanmean`` does)."""
    obs = np.asarray(obs, np.float64)
    sim = np.asarray(sim, np.float64)
    ok = np.isfinite(obs) & np.isfinite(sim)
    o = np.where(ok, obs, np.nan)
    s = np.where(ok, sim, np.nan)
    out: dict[str, Any] = {"n": int(ok.sum()), "n_units": int(ok.any(axis=1).sum()) if ok.ndim == 2 else 0}
    out["flat"] = regression(s[ok], o[ok])
    with np.errstate(invalid="ignore", divide="ignore"):
        cnt = ok.sum(axis=1)
        om = np.where(cnt > 0, np.nansum(o, axis=1) / np.maximum(cnt, 1), np.nan)
        sm = np.where(cnt > 0, np.nansum(s, axis=1) / np.maximum(cnt, 1), np.nan)
    sel = np.isfinite(om) & np.isfinite(sm)
    out["spatial"] = regression(sm[sel], om[sel])
    nse, rmse = [], []
    for i in np.flatnonzero(cnt > 0):
        reg = regression(s[i, ok[i]], o[i, ok[i]])
        nse.append(reg["nse"])
        rmse.append(reg["rmse"])
    for name, v in (("temporal_nse", nse), ("temporal_rmse", rmse)):
        a = np.asarray(v, np.float64)
        a = a[np.isfinite(a)]
        out[name] = ({"mean": float(a.mean()), "median": float(np.median(a)), "std": float(a.std())}
                     if a.size else {"mean": float("nan"), "median": float("nan"), "std": float("nan")})
    return out
