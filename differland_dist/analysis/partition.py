"""Variance partitioning: how much of a parameter map's spatial variation each predictor group
explains (cross-validated, by patch), and the share that vegetation types (PFTs) account for.

Recipe (docs/analysis.md): each parameter map (unbounded space) is standardised over the land
pixels; a ``HistGradientBoostingRegressor`` (fixed ``random_state``) is fitted on one predictor
group's raw values with ``GroupKFold`` over patches (neighbouring pixels never straddle train
and validation); R² is taken over the pooled out-of-fold predictions. ``pft_share = r2_pft /
r2_all``, the share of the explainable spatial variation that the PFT fractions explain.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import GroupKFold
from threadpoolctl import threadpool_limits

from differland_dist.data import schema
from differland_dist.errors import DifferlandError

log = logging.getLogger(__name__)

#: The predictor groups of the paper's full set.
GROUPS: dict[str, tuple[str, ...]] = {g: schema.PREDICTOR_SETS[g] for g in ("PFT", "CLIM", "SOIL", "AGE")}
#: Parameters with ``r2_all`` at least this are "explainable" in the pft_share summary.
R2_ALL_MIN = 0.2


def standardise(values: np.ndarray) -> np.ndarray:
    """(P, K) -> (P, K) zero mean, unit standard deviation per column over pixels (a constant
    column stays zero)."""
    v = np.asarray(values, np.float64)
    sd = v.std(axis=0)
    return (v - v.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def cv_r2(X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, n_splits: int = 5,
          seed: int = 0, max_iter: int = 100) -> float:
    """Cross-validated R² of a gradient-boosting regression of ``y`` (P,) on ``X`` (P, F),
    folds by ``groups`` (P,) (patches); R² over the pooled out-of-fold predictions.
    NaN when ``y`` is constant."""
    y = np.asarray(y, np.float64)
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst <= 0:
        return float("nan")
    pred = cv_predictions(X, y, groups, n_splits=n_splits, seed=seed, max_iter=max_iter)
    return float(1.0 - np.sum((y - pred) ** 2) / sst)


def cv_predictions(X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, n_splits: int = 5,
                   seed: int = 0, max_iter: int = 100) -> np.ndarray:
    """(P,) out-of-fold predictions of ``y`` by the :func:`cv_r2` recipe."""
    y = np.asarray(y, np.float64)
    k = min(n_splits, len(np.unique(groups)))
    if k < 2:
        raise DifferlandError(f"variance partition: {len(np.unique(groups))} patch(es); "
                              "cross-validation by patch needs at least 2")
    pred = np.empty_like(y)
    with threadpool_limits(1):  # OpenMP threads on small data: 100x slower on a busy host
        _folds(X, y, groups, k, pred, seed, max_iter)
    return pred


def _folds(X, y, groups, k, pred, seed, max_iter) -> None:
    for tr, va in GroupKFold(n_splits=k).split(X, y, groups):
        m = HistGradientBoostingRegressor(max_iter=max_iter, learning_rate=0.1, max_leaf_nodes=15,
                                          min_samples_leaf=min(20, max(2, tr.size // 20)),
                                          early_stopping=False, random_state=seed)
        m.fit(X[tr], y[tr])
        pred[va] = m.predict(X[va])


def variance_partition(params: np.ndarray, param_names: Sequence[str],
                       predictors: Mapping[str, np.ndarray], patch: np.ndarray, *,
                       groups: Mapping[str, Sequence[str]] | None = None,
                       reference: np.ndarray | None = None, n_splits: int = 5, seed: int = 0,
                       max_iter: int = 100) -> dict:
    """Per parameter: ``r2_all``, ``r2_<group>`` for every group, ``pft_share``; and when
    ``reference`` (the PFT-only ensemble's (P, K) map, same space) is given, ``direct_share`` =
    1 - Var(params - reference) / Var(params) (on the standardised scale of ``params``).

    Args:
      params: (P, K) parameter maps (unbounded space) over land pixels.
      predictors: raw predictor name -> (P,) values; must hold every group's names.
      patch: (P,) patch id of each pixel (CV folds).
    Returns ``{"parameters": {name: {...}}, "summary": {...}, "recipe": {...}}``.
    """
    groups = dict(groups or GROUPS)
    P = params.shape[0]
    missing = sorted({n for names in groups.values() for n in names} - set(predictors))
    if missing:
        raise DifferlandError(f"variance partition: predictors {missing} are missing")
    if params.ndim != 2 or params.shape[1] != len(param_names) or np.shape(patch) != (P,):
        raise DifferlandError(f"variance partition: params {params.shape}, {len(param_names)} names "
                              f"and patch {np.shape(patch)} do not agree")
    all_names = [n for names in groups.values() for n in names]
    X_all = np.stack([np.asarray(predictors[n], np.float64) for n in all_names], axis=1)
    X_group = {g: np.stack([np.asarray(predictors[n], np.float64) for n in names], axis=1)
               for g, names in groups.items()}
    Z = standardise(params)
    Zref = None
    if reference is not None:
        ref = np.asarray(reference, np.float64)
        mu, sd = params.mean(axis=0), params.std(axis=0)
        Zref = (ref - mu) / np.where(sd > 0, sd, 1.0)
    out = {}
    for j, name in enumerate(param_names):
        y = Z[:, j]
        rec = {"r2_all": cv_r2(X_all, y, patch, n_splits=n_splits, seed=seed, max_iter=max_iter)}
        for g, X in X_group.items():
            rec[f"r2_{g}"] = cv_r2(X, y, patch, n_splits=n_splits, seed=seed, max_iter=max_iter)
        r2p, r2a = rec.get("r2_PFT", float("nan")), rec["r2_all"]
        rec["pft_share"] = (float(np.clip(max(r2p, 0.0) / r2a, 0.0, 1.5))
                            if np.isfinite(r2a) and r2a > 0 and np.isfinite(r2p) else float("nan"))
        if Zref is not None:
            var = float(np.var(y))
            rec["direct_share"] = float(1.0 - np.var(y - Zref[:, j]) / var) if var > 0 else float("nan")
        out[name] = rec
        log.debug("partition %s: %s", name, rec)
    return {"parameters": out, "summary": summarise(out), "recipe": {
        "model": "HistGradientBoostingRegressor(max_iter=%d, learning_rate=0.1, max_leaf_nodes=15, "
                 "early_stopping=False, random_state=%d)" % (max_iter, seed),
        "cv": f"GroupKFold({n_splits}) by patch; R2 over pooled out-of-fold predictions",
        "groups": {g: list(v) for g, v in groups.items()}, "pixels": int(P),
        "explainable_r2_all_min": R2_ALL_MIN}}


def summarise(per_param: Mapping[str, Mapping[str, float]], r2_min: float = R2_ALL_MIN) -> dict:
    """Median ``pft_share`` over parameters with ``r2_all >= r2_min``, and the dominant group
    of each such parameter."""
    keep = [k for k, v in per_param.items() if np.isfinite(v["r2_all"]) and v["r2_all"] >= r2_min]
    shares = [per_param[k]["pft_share"] for k in keep if np.isfinite(per_param[k]["pft_share"])]
    dominant = {}
    for k in keep:
        rg = {g[3:]: v for g, v in per_param[k].items() if g.startswith("r2_") and g != "r2_all"}
        dominant[k] = max(rg, key=lambda g: rg[g] if np.isfinite(rg[g]) else -np.inf)
    return {"explainable": keep, "n_explainable": len(keep),
            "median_pft_share": float(np.median(shares)) if shares else float("nan"),
            "dominant_group": dominant}
