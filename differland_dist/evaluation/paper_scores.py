"""The paper's scores (``evaluate_performance.py`` of JianingFang/DifferLand_Global) over units
added block by block: its stream names and constants, its patch series and units, and
:class:`PaperScores` (:func:`differland_dist.evaluation.metrics.paper_scores` accumulated)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from differland_dist.evaluation import metrics

PAPER_WARM_UP = 24         # months left out (evaluate_performance.py: --warm_up 12 * 2)
PAPER_WATER_THRESHOLD = 0.7  # water: steps whose mean weight over the padded patch is below
PAPER_EPS = 1e-8           # the weighted patch means' guard (EPS of evaluate_performance.py)
#: published metric name of each stream (monthly streams as they are, biomass annual)
PAPER_STREAMS = {"lai": "lai", "vod": "vod", "sif": "sif", "biomass": "agb", "et_gleam": "et",
                 "nbe": "nbe", "fire": "fire", "ewt": "water"}
#: streams the reference scores as annual means (vod is monthly there, though its loss term
#: compares annual means)
PAPER_ANNUAL = ("biomass",)


def paper_patch_series(x, w, patch, ids, padded: int, water: bool, thr: float):
    """(patches, T) patch series as evaluate_performance.py forms them from padded batches.

    NBE and fire: sum_p(x w) / (sum_p(w) + EPS) (0 for both sides at unobserved steps, which
    the reference keeps as pairs). Water: the model centred per pixel by its
    weighted time mean (sum_t(x w) / (sum_t(w) + 0.1)), then for model and observations the
    mean over the padded batch of x·w (sum / ``padded``, the batch's 320 rows), both NaN at
    steps whose mean weight over the padded batch is below ``thr``."""
    out = np.full((len(ids), x.shape[1]), np.nan)
    for k, p in enumerate(ids):
        sel = patch == p
        xs, ws = x[sel], w[sel]
        if water:
            out[k] = np.sum(xs * ws, axis=0) / padded
            out[k, np.sum(ws, axis=0) / padded < thr] = np.nan
        else:
            out[k] = np.sum(xs * ws, axis=0) / (np.sum(ws, axis=0) + PAPER_EPS)
    return out


#: streams mapped per pixel (skill maps; ewt as the reference maps it: the raw water pool
#: against the observed anomalies) and the one mapped on the 4° x 5° grid
PAPER_PIXEL_MAPS = ("lai", "vod", "sif", "biomass", "et_gleam", "ewt")
PAPER_COARSE_MAPS = ("nbe",)


class PaperScores:
    """:func:`metrics.paper_scores` over units added block by block: the flat pairs as merged
    :class:`metrics.Moments`, the units' means and per-unit temporal NSE / RMSE kept (one
    value per unit). Equal to ``paper_scores`` of all units at once (to rounding)."""

    def __init__(self):
        self.flat = metrics.Moments()
        self.n = self.n_units = 0
        self.om: list[np.ndarray] = []
        self.sm: list[np.ndarray] = []
        self.nse: list[float] = []
        self.rmse: list[float] = []

    def add(self, obs: np.ndarray, sim: np.ndarray) -> None:
        """obs, sim: (units, X), NaN where unobserved."""
        obs = np.asarray(obs, np.float64)
        sim = np.asarray(sim, np.float64)
        ok = np.isfinite(obs) & np.isfinite(sim)
        self.n += int(ok.sum())
        self.n_units += int(ok.any(axis=1).sum())
        self.flat = self.flat + metrics.Moments.of(obs, sim, ok)
        o, s = np.where(ok, obs, np.nan), np.where(ok, sim, np.nan)
        cnt = ok.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            om = np.where(cnt > 0, np.nansum(o, axis=1) / np.maximum(cnt, 1), np.nan)
            sm = np.where(cnt > 0, np.nansum(s, axis=1) / np.maximum(cnt, 1), np.nan)
        sel = np.isfinite(om) & np.isfinite(sm)
        self.om.append(om[sel])
        self.sm.append(sm[sel])
        for i in np.flatnonzero(cnt > 0):
            reg = metrics.regression(s[i, ok[i]], o[i, ok[i]])
            self.nse.append(reg["nse"])
            self.rmse.append(reg["rmse"])

    def _flat(self) -> dict[str, float]:
        f, nan = self.flat, float("nan")
        if f.n == 0:
            return {k: nan for k in ("nse", "rmse", "mae", "r", "slope", "intercept")}
        slope = f.c_os / f.m2_s if f.m2_s > 0 else nan
        return {"nse": 1 - f.sse / f.m2_o if f.m2_o > 0 else nan, "rmse": float(np.sqrt(f.sse / f.n)),
                "mae": f.sae / f.n,
                "r": f.c_os / float(np.sqrt(f.m2_s * f.m2_o)) if f.m2_s > 0 and f.m2_o > 0 else nan,
                "slope": slope, "intercept": f.mean_o - slope * f.mean_s if f.m2_s > 0 else nan}

    def result(self) -> dict[str, Any]:
        """As :func:`metrics.paper_scores`."""
        cat = lambda parts: np.concatenate(parts) if parts else np.empty(0)  # noqa: E731
        out: dict[str, Any] = {"n": self.n, "n_units": self.n_units, "flat": self._flat(),
                               "spatial": metrics.regression(cat(self.sm), cat(self.om))}
        for name, v in (("temporal_nse", self.nse), ("temporal_rmse", self.rmse)):
            a = np.asarray(v, np.float64)
            a = a[np.isfinite(a)]
            out[name] = ({"mean": float(a.mean()), "median": float(np.median(a)), "std": float(a.std())}
                         if a.size else {"mean": float("nan"), "median": float("nan"), "std": float("nan")})
        return out


class PaperLayout(NamedTuple):
    """How the reference forms units: the rows of its padded patch batch, steps per year and
    the water mask's mean-weight threshold."""

    padded: int
    steps_per_year: int
    water_threshold: float


def paper_units(name: str, rule, val, w, sim, sel, patch, layout: PaperLayout
                ) -> tuple[np.ndarray, np.ndarray]:
    """(obs, sim) units x X of a stream for the pixels ``sel`` of a block of whole patches."""
    if rule.level == "patch":
        ids = np.unique(patch[sel])
        ws = np.where(w > 0, w, 0.0)
        if name == "ewt":
            mean = np.sum(sim * ws, axis=1) / (np.sum(ws, axis=1) + 0.1)
            x_sim = sim - mean[:, None]
        else:
            x_sim = sim
        obs_v = np.nan_to_num(val)
        return (paper_patch_series(obs_v[sel], ws[sel], patch[sel], ids, layout.padded,
                                    name == "ewt", layout.water_threshold),
                paper_patch_series(x_sim[sel], ws[sel], patch[sel], ids, layout.padded,
                                    name == "ewt", layout.water_threshold))
    if name in PAPER_ANNUAL:
        spy = layout.steps_per_year
        Y = val.shape[1] // spy
        n = int(np.count_nonzero(sel))  # explicit: -1 is ambiguous with no whole year (Y = 0)
        obs_y = val[sel, : Y * spy].reshape(n, Y, spy)
        return (np.where(np.all(np.isfinite(obs_y), axis=2), obs_y.mean(axis=2), np.nan),
                sim[sel, : Y * spy].reshape(n, Y, spy).mean(axis=2))
    return val[sel], sim[sel]
