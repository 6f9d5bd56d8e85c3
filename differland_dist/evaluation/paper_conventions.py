"""The reference's numbers, exactly: ``compute_metrics`` of the paper's
``evaluate_performance.py`` (JianingFang/DifferLand_Global) with its conventions kept, beside
which ``evaluate --conventions paper`` reports the project's gap-aware versions.

What the reference does, and this module does too (the gap-aware versions differ):

* **spatial** scores compare each unit's plain mean over time of observations and model,
  with the unobserved steps set to NaN in both: one gap makes a unit's mean NaN and drops the
  unit, so a stream observed with gaps everywhere (LAI, biomass, water) has NaN spatial scores;
* **NSE** is ``sklearn.metrics.r2_score(observed, simulated)``: a constant observed series
  scores 1.0 if matched exactly and 0.0 otherwise, a single pair NaN; the per-unit temporal
  NSE keeps those values in its ``nanmean`` / ``nanmedian`` / ``nanstd``;
* **biomass** years are plain means of 12 monthly values in which every unobserved month is
  the driver's ``-9999`` fill: a year missing some months enters with that sentinel averaged
  in, a year missing all twelve is exactly ``-9999`` and dropped (:func:`sentinel_annual`);
* regression statistics are ``scipy.stats.linregress(simulated, observed)``.

Scores accumulate over blocks of units (:class:`ReferenceScores`): the flat pairs as merged
moments, one row of statistics per unit. Keys are the reference's, without its
``<stream>_<split>_`` prefix (``flat_nse``, ``spatial_rval``, ``spatial_median_temporal_nse``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from differland_dist.evaluation.metrics import Moments

#: The driver's fill value for an unobserved month (preprocessing of the reference).
SENTINEL = -9999.0
#: Statistics of one ``linregress``, by the reference's key suffix.
REGRESSION_KEYS = ("rval", "slope", "intercept", "pval", "stderr", "intercept_stderr")


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """``sklearn.metrics.r2_score`` of one output, with its conventions: NaN below two
    samples; a constant ``y_true`` gives 1.0 when predicted exactly, else 0.0."""
    t = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    if t.size < 2:
        return float("nan")
    sse = float(np.sum((t - p) ** 2))
    sst = float(np.sum((t - t.mean()) ** 2))
    return _r2(sse, sst)


def _r2(sse: float, sst: float) -> float:
    if sst == 0.0:
        return 1.0 if sse == 0.0 else 0.0
    return 1.0 - sse / sst


def regression(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``linregress(x, y)`` (x: simulated, y: observed) as the reference's keys; NaN where
    scipy cannot fit (fewer than two points or constant x, which the reference would not
    survive)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size < 2 or np.all(x == x[0]):
        return {k: float("nan") for k in REGRESSION_KEYS}
    r = stats.linregress(x, y)
    return {"rval": float(r.rvalue), "slope": float(r.slope), "intercept": float(r.intercept),
            "pval": float(r.pvalue), "stderr": float(r.stderr),
            "intercept_stderr": float(r.intercept_stderr)}


def _regression_of_moments(m: Moments) -> dict[str, float]:
    """:func:`regression` from merged moments (x = sim, y = obs): scipy's formulas."""
    nan = float("nan")
    if m.n < 2 or m.m2_s == 0.0:
        return {k: nan for k in REGRESSION_KEYS}
    slope = m.c_os / m.m2_s
    intercept = m.mean_o - slope * m.mean_s
    r = m.c_os / math.sqrt(m.m2_s * m.m2_o) if m.m2_o > 0 else 0.0
    r = max(-1.0, min(1.0, r))
    df = m.n - 2
    if df > 0:
        tt = r * math.sqrt(df / ((1.0 - r + 1e-20) * (1.0 + r + 1e-20)))
        p = float(2 * stats.t.sf(abs(tt), df))
        stderr = math.sqrt((1 - r * r) * m.m2_o / m.m2_s / df)
    else:  # two points: scipy's exact-fit values
        p, stderr = 1.0, 0.0
    if df > 0 and r in (1.0, -1.0):
        p = 0.0
    inter_se = stderr * math.sqrt(m.m2_s / m.n + m.mean_s ** 2)
    return {"rval": r, "slope": slope, "intercept": intercept, "pval": p, "stderr": stderr,
            "intercept_stderr": inter_se}


def sentinel_annual(monthly: np.ndarray, steps_per_year: int = 12) -> np.ndarray:
    """(units, years) plain means of whole years of (units, T) monthly values, unobserved
    months (NaN) entering as ``-9999`` (the reference's ``annualize_monthly`` of its filled
    array; steps after the last whole year are dropped, the reference needs T = 12 k)."""
    x = np.asarray(monthly, np.float64)
    x = np.where(np.isfinite(x), x, SENTINEL)
    Y = x.shape[1] // steps_per_year
    return x[:, : Y * steps_per_year].reshape(x.shape[0], Y, steps_per_year).mean(axis=2)


#: What the keys of ``evaluation.json``'s ``paper_conventions.streams.<s>.<split>`` hold.
KEYS_NOTE = ("reference: evaluate_performance.py's compute_metrics exactly (plain-mean spatial "
             "scores, NaN when every unit has a gap; sklearn r2_score conventions; biomass years "
             "with the -9999 fill averaged in); flat, spatial, temporal_nse, temporal_rmse: the "
             "project's gap-aware versions (spatial means over observed steps, constant series "
             "left out, partial biomass years dropped)")


def reference_units(monthly_obs: np.ndarray, monthly_sim: np.ndarray,
                    steps_per_year: int) -> tuple[np.ndarray, np.ndarray]:
    """(observed, simulated) annual units of an annual stream (biomass) as the reference forms
    them: observed years with the sentinel averaged in, simulated years plain means."""
    sim = np.asarray(monthly_sim, np.float64)
    Y = sim.shape[1] // steps_per_year
    return (sentinel_annual(monthly_obs, steps_per_year),
            sim[:, : Y * steps_per_year].reshape(sim.shape[0], Y, steps_per_year).mean(axis=2))


class ReferenceScores:
    """``compute_metrics`` over units added block by block; equal to
    :func:`reference_metrics` of all units at once (to rounding of the flat moments)."""

    def __init__(self):
        self.flat = Moments()
        self.lab_mean: list[np.ndarray] = []
        self.pred_mean: list[np.ndarray] = []
        self.nse: list[float] = []
        self.rmse: list[float] = []

    def add(self, label: np.ndarray, predicted: np.ndarray) -> None:
        """label, predicted: (units, X); NaN or ``-9999`` where unobserved."""
        lab = np.array(label, np.float64, copy=True)
        pred = np.array(predicted, np.float64, copy=True)
        bad = np.isnan(lab) | np.isnan(pred) | (lab == SENTINEL)
        lab[bad] = np.nan
        pred[bad] = np.nan
        ok = ~bad
        self.flat = self.flat + Moments.of(lab, pred, ok)
        self.lab_mean.append(lab.mean(axis=1))   # plain means: one gap makes the unit NaN
        self.pred_mean.append(pred.mean(axis=1))
        for i in np.flatnonzero(ok.any(axis=1)):
            t, p = lab[i, ok[i]], pred[i, ok[i]]
            self.nse.append(r2_score(t, p))
            self.rmse.append(float(np.sqrt(np.mean((t - p) ** 2))))

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        f = self.flat
        nan = float("nan")
        out["flat_nse"] = (_r2(f.sse, f.m2_o) if f.n >= 2 else nan) if f.n else nan
        out["flat_rmse"] = math.sqrt(f.sse / f.n) if f.n else nan
        out["flat_mae"] = f.sae / f.n if f.n else nan
        for k, v in _regression_of_moments(f).items():
            out[f"flat_{k}"] = v
        cat = lambda parts: np.concatenate(parts) if parts else np.empty(0)  # noqa: E731
        lm, pm = cat(self.lab_mean), cat(self.pred_mean)
        sel = ~(np.isnan(lm) | np.isnan(pm))
        lm, pm = lm[sel], pm[sel]
        out["spatial_n_units"] = int(sel.sum())
        out["spatial_nse"] = r2_score(lm, pm) if lm.size else nan
        out["spatial_rmse"] = float(np.sqrt(np.mean((lm - pm) ** 2))) if lm.size else nan
        out["spatial_mae"] = float(np.mean(np.abs(lm - pm))) if lm.size else nan
        for k, v in regression(pm, lm).items():
            out[f"spatial_{k}"] = v
        for name, vals in (("nse", self.nse), ("rmse", self.rmse)):
            a = np.asarray(vals, np.float64)
            fin = a[~np.isnan(a)]
            out[f"spatial_mean_temporal_{name}"] = float(fin.mean()) if fin.size else nan
            out[f"spatial_median_temporal_{name}"] = float(np.median(fin)) if fin.size else nan
            out[f"spatial_std_temporal_{name}"] = float(fin.std()) if fin.size else nan
        return out


def reference_metrics(label: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """``compute_metrics(label, predicted)`` of the reference for (units, X) arrays."""
    acc = ReferenceScores()
    acc.add(label, predicted)
    return acc.result()
