"""Bootstrap intervals of the analyses: over kept members and over patches at once.

Each of ``n`` resamples (seeded: ``numpy.random.default_rng([seed, 7919])``) draws the kept
members with replacement (their mean is the resample's ensemble-mean map) and the patches
with replacement (a patch drawn twice counts twice). The regressions are refitted on each
resampled ensemble-mean map by the partition's own recipe (GroupKFold by patch over every
pixel: refitting on resampled patches would put fewer distinct patches in each fold and bias
every R² down); the patch resample enters through the pixels each R² is taken over. On that
resample it recomputes

- each requested parameter's ``pft_share`` (only the two fits the share needs: PFT and all
  predictors, the variance partition's recipe) and their median;
- the PCA of the requested parameters: explained variance of the first three components, the
  cross-validated R² of their scores from all predictors (how environmental a gradient is), and
  with a truth the principal-angle cosines against the truth's PCA on the same pixels;
- from SHAP values (members x explained pixels, resampled the same way over members and over
  the explained pixels): each parameter's rank of every predictor and, with a truth, the pooled
  and per-parameter Spearman rho against the truth's.

Intervals are the 2.5-97.5 % percentiles of the resamples (95 %). With the default 20
resamples the interval ends are rough (the 1st and 20th of 20 values after interpolation):
enough to tell 0.3 from 0.7, not to quote a third digit.
"""

from __future__ import annotations

import logging
from typing import Mapping, NamedTuple, Sequence

import numpy as np
from scipy import stats

from differland_dist.analysis import gradients
from differland_dist.analysis.partition import cv_predictions, standardise
from differland_dist.analysis.truth import importance_profile
from differland_dist.errors import DifferlandError

log = logging.getLogger(__name__)

#: Default number of resamples of ``differland analyze`` (``--bootstrap``).
N_RESAMPLES = 20
#: Interval: central 95 %.
LEVEL = 0.95
_SALT = 7919


def interval(values: Sequence[float]) -> list[float | None]:
    """[lo, hi] central LEVEL percentile interval of the finite values ([None, None] if none)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return [None, None]
    a = 100 * (1 - LEVEL) / 2
    return [float(np.percentile(v, a)), float(np.percentile(v, 100 - a))]


def resamples(n_members: int, patch: np.ndarray, n: int, seed: int):
    """Yield ``n`` (member indices (M,), pixel indices (P',), group ids (P',)) resamples."""
    if n_members < 1:
        raise DifferlandError("bootstrap: no member to resample")
    rng = np.random.default_rng([int(seed), _SALT])
    patches = np.unique(patch)
    by_patch = {p: np.flatnonzero(patch == p) for p in patches}
    for _ in range(n):
        m = rng.integers(0, n_members, size=n_members)
        chosen = rng.choice(patches, size=patches.size, replace=True)
        pix = np.concatenate([by_patch[p] for p in chosen])
        yield m, pix, patch[pix]


def _r2_on(y: np.ndarray, pred: np.ndarray, pix: np.ndarray) -> float:
    yy = y[pix]
    sst = float(np.sum((yy - yy.mean()) ** 2))
    return float(1.0 - np.sum((yy - pred[pix]) ** 2) / sst) if sst > 0 else float("nan")


class _Fit(NamedTuple):
    """The partition's recipe as the resamples refit it: predictors (P, G) of the PFT group
    and of all groups, patches (P,) for GroupKFold, and its settings."""

    X_pft: np.ndarray
    X_all: np.ndarray
    patch: np.ndarray
    max_iter: int
    n_splits: int
    r2_min: float

    def oof(self, y: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
        """Out-of-fold predictions of ``y`` (P,) over every pixel (all predictors by default)."""
        return cv_predictions(self.X_all if X is None else X, y, self.patch,
                              n_splits=self.n_splits, max_iter=self.max_iter)


def _share(y: np.ndarray, fit: _Fit, pix: np.ndarray) -> tuple[float, float]:
    """(pft_share, r2_all) of one standardised map (P,): the out-of-fold predictions of the
    partition's recipe over every pixel, their R² over the resampled pixels ``pix``; the share
    NaN when r2_all < r2_min."""
    r2a = _r2_on(y, fit.oof(y), pix)
    if not np.isfinite(r2a) or r2a < fit.r2_min:
        return float("nan"), r2a
    return float(np.clip(max(_r2_on(y, fit.oof(y, fit.X_pft), pix), 0.0) / r2a, 0.0, 1.5)), r2a


def _pca_on(full_mean: np.ndarray, pix: np.ndarray, pj: list[int], fit: _Fit,
            true_x: np.ndarray | None) -> tuple[list[float], list[float], list[float] | None]:
    """One resample's PCA of the parameters ``pj``: explained variance of the first three
    components, the out-of-fold R² of their scores, and the cosines with the truth's PCA."""
    mean = full_mean[pix]
    res = gradients.pca(mean[:, pj])
    # every pixel's scores on the resample's components (its standardisation), their
    # out-of-fold prediction over every pixel, R² over the resampled ones
    sub = full_mean[:, pj]
    mu, sd = mean[:, pj].mean(axis=0), mean[:, pj].std(axis=0)
    scores = ((sub - mu) / np.where(sd > 0, sd, 1.0)) @ res["loadings"][:3].T
    score_r2 = [_r2_on(scores[:, c], fit.oof(scores[:, c]), pix) for c in range(3)]
    cos = None
    if true_x is not None:
        t = gradients.pca(np.asarray(true_x, np.float64)[pix][:, pj])
        cos = [float(c) for c in gradients.principal_cosines(res["loadings"][:3], t["loadings"][:3])]
    return [float(v) for v in res["explained"][:3]], score_r2, cos


def _shap_on(mabs: np.ndarray, tabs: np.ndarray | None, names: list[str], shap_params: Sequence[str],
             hj: list[int]) -> tuple[dict, float | None, dict]:
    """One resample's SHAP ranks of every predictor per parameter (1 = largest mean |SHAP|)
    and, with the truth's mean |SHAP| ``tabs``, the pooled and per-parameter Spearman rho."""
    ranks = {}
    for p, j in zip(shap_params, hj):
        order = np.argsort(-mabs[:, j])
        r = np.empty(len(order), int)
        r[order] = np.arange(1, len(order) + 1)
        ranks[p] = r.tolist()
    if tabs is None:
        return ranks, None, {}
    a = importance_profile(mabs, names, list(shap_params))
    bb = importance_profile(tabs, names, list(shap_params))
    pooled = float(stats.spearmanr(a, bb).statistic) if np.std(a) > 0 and np.std(bb) > 0 else float("nan")
    per_rho = {}
    for p, j in zip(shap_params, hj):
        ok = np.std(mabs[:, j]) > 0 and np.std(tabs[:, j]) > 0
        per_rho[p] = float(stats.spearmanr(mabs[:, j], tabs[:, j]).statistic) if ok else float("nan")
    return ranks, pooled, per_rho


def _shap_intervals(shap_params: Sequence[str], ranks: dict, pooled: list, per_rho: dict) -> dict:
    """The ``shap`` entry: rank intervals, first-rank frequencies and rho intervals."""
    out = {"over": list(shap_params),
           "rank_interval": {p: [interval(np.array(v)[:, f]) for f in range(np.array(v).shape[1])]
                             for p, v in ranks.items()},
           "first_rank_frequency": {p: np.bincount(np.argmin(np.array(v), axis=1),
                                                   minlength=np.array(v).shape[1]).tolist()
                                    for p, v in ranks.items()}}
    if pooled:
        out["pooled_rho"] = interval(pooled)
        out["per_parameter_rho"] = {p: interval(v) for p, v in per_rho.items()}
    return out


def _pca_intervals(pca_params: Sequence[str], expl: list, score_r2: list, cosines: list) -> dict:
    """The ``pca`` entry: intervals of the explained variance, score R² and cosines."""
    e, r2 = np.array(expl), np.array(score_r2)
    out = {"over": list(pca_params), "explained": [interval(e[:, c]) for c in range(3)],
           "score_r2_all": [interval(r2[:, c]) for c in range(3)]}
    if cosines:
        cs = np.array(cosines)
        out["cosines"] = [interval(cs[:, c]) for c in range(3)]
    return out


def bootstrap(members: np.ndarray, param_names: Sequence[str], predictors: Mapping[str, np.ndarray],
              patch: np.ndarray, groups: Mapping[str, Sequence[str]], *, share_params: Sequence[str],
              pca_params: Sequence[str], true_x: np.ndarray | None = None,
              shap_values: np.ndarray | None = None, shap_pixels: np.ndarray | None = None,
              shap_truth: np.ndarray | None = None, shap_params: Sequence[str] = (),
              n: int = N_RESAMPLES, seed: int = 0, max_iter: int = 60, n_splits: int = 5,
              r2_min: float = 0.2) -> dict:
    """Bootstrap intervals (module docstring).

    Args:
      members: (M, P, K) member maps (unbounded space), K = len(param_names).
      share_params: parameters whose pft_share is resampled (the median is taken over them).
      pca_params: parameters of the resampled PCA (at least 3; fewer: no PCA intervals).
      true_x: (P, K) truth (synthetic stores): PCA cosines against it.
      shap_values: (M, n_px, F, K) SHAP values of the members at ``shap_pixels`` (n_px,);
        ``shap_truth`` (n_px, F, K) the truth's; ``shap_params`` the parameters ranked.
    Returns ``{"n", "seed", "level", "pft_share": {param: {"values", "interval"}},
    "median_pft_share": {...}, "pca": {...}, "shap": {...}}``.
    """
    x = np.asarray(members, np.float64)
    M, P, K = x.shape
    names = list(param_names)
    if K != len(names) or np.shape(patch) != (P,):
        raise DifferlandError(f"bootstrap: members {x.shape}, {len(names)} names, patch {np.shape(patch)}")
    all_names = [p for g in groups.values() for p in g]
    patch = np.asarray(patch)
    fit = _Fit(np.stack([np.asarray(predictors[p], np.float64) for p in groups["PFT"]], axis=1),
               np.stack([np.asarray(predictors[p], np.float64) for p in all_names], axis=1),
               patch, max_iter, n_splits, r2_min)
    sj = [names.index(p) for p in share_params]
    pj = [names.index(p) for p in pca_params]
    hj = [names.index(p) for p in shap_params]
    shares = {p: [] for p in share_params}
    med, expl, score_r2, cosines = [], [], [], []
    ranks = {p: [] for p in shap_params}
    pooled, per_rho = [], {p: [] for p in shap_params}
    rng_shap = np.random.default_rng([int(seed), _SALT + 1])
    for b, (mi, pix, _) in enumerate(resamples(M, patch, n, seed)):
        full_mean = x[mi].mean(axis=0)
        row = [_share(standardise(full_mean[:, [j]])[:, 0], fit, pix)[0] for j in sj]
        for p, s in zip(share_params, row):
            shares[p].append(s)
        fin = [v for v in row if np.isfinite(v)]
        med.append(float(np.median(fin)) if fin else float("nan"))
        if len(pj) >= 3:
            e, r2, cos = _pca_on(full_mean, pix, pj, fit, true_x)
            expl.append(e)
            score_r2.append(r2)
            if cos is not None:
                cosines.append(cos)
        if shap_values is not None and hj:
            sv = np.asarray(shap_values)
            px = rng_shap.integers(0, sv.shape[1], size=sv.shape[1])
            mabs = np.mean(np.abs(sv[mi][:, px]), axis=(0, 1))  # (F, K)
            tabs = None if shap_truth is None else np.mean(np.abs(np.asarray(shap_truth)[px]), axis=0)
            r, rho, per = _shap_on(mabs, tabs, names, shap_params, hj)
            for p in shap_params:
                ranks[p].append(r[p])
            if rho is not None:
                pooled.append(rho)
                for p in shap_params:
                    per_rho[p].append(per[p])
        log.debug("bootstrap resample %d/%d done", b + 1, n)
    out: dict = {"n": int(n), "seed": int(seed), "level": LEVEL,
                 "resampled": "kept members and patches (with replacement), jointly",
                 "pft_share": {p: {"values": v, "interval": interval(v)} for p, v in shares.items()},
                 "median_pft_share": {"over": list(share_params), "values": med, "interval": interval(med)}}
    if expl:
        out["pca"] = _pca_intervals(pca_params, expl, score_r2, cosines)
    if ranks and any(ranks.values()):
        out["shap"] = _shap_intervals(shap_params, ranks, pooled, per_rho)
    return out
