"""Parameter gradients: PCA of the standardised parameter maps (pixels x parameters), the
components' correlation with every predictor, and principal angles between subspaces."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from differland_dist.analysis.partition import standardise
from differland_dist.errors import DifferlandError


def pca(params: np.ndarray) -> dict[str, np.ndarray]:
    """PCA of (P, K) maps standardised per column.

    Returns ``explained`` (C,) variance ratios, ``loadings`` (C, K) unit vectors (the sign
    chosen so that the largest-magnitude loading is positive: reproducible), ``scores`` (P, C),
    with C = min(P, K)."""
    Z = standardise(params)
    if Z.shape[0] < 2:
        raise DifferlandError(f"PCA needs at least 2 pixels, got {Z.shape[0]}")
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    sign = np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])
    vt = vt * np.where(sign == 0, 1.0, sign)[:, None]
    var = s ** 2
    tot = var.sum()
    return {"explained": var / tot if tot > 0 else np.zeros_like(var), "loadings": vt,
            "scores": Z @ vt.T}


def predictor_correlations(scores: np.ndarray, predictors: Mapping[str, np.ndarray],
                           n_components: int = 3) -> dict[str, dict[str, float]]:
    """Pearson r of each of the first ``n_components`` score maps with every predictor:
    ``{"PC1": {predictor: r}}`` (NaN for a constant predictor)."""
    out = {}
    for c in range(min(n_components, scores.shape[1])):
        s = scores[:, c]
        row = {}
        for name, v in predictors.items():
            v = np.asarray(v, np.float64)
            ok = np.isfinite(v)
            row[name] = (float(np.corrcoef(s[ok], v[ok])[0, 1])
                         if ok.sum() > 2 and np.std(v[ok]) > 0 and np.std(s[ok]) > 0 else float("nan"))
        out[f"PC{c + 1}"] = row
    return out


def top_predictors(corr: Mapping[str, float], n: int = 3) -> list[tuple[str, float]]:
    """The ``n`` predictors with the largest |r| (names a component)."""
    items = [(k, v) for k, v in corr.items() if np.isfinite(v)]
    return sorted(items, key=lambda kv: -abs(kv[1]))[:n]


def principal_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the subspaces spanned by the rows of ``a``
    (k, K) and ``b`` (k, K) (e.g. the first k loadings of two PCAs), descending; 1 = shared
    direction, 0 = orthogonal."""
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    if a.shape[1] != b.shape[1]:
        raise DifferlandError(f"principal angles: {a.shape[1]} vs {b.shape[1]} parameters")
    qa, _ = np.linalg.qr(a.T)
    qb, _ = np.linalg.qr(b.T)
    return np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)


def gradients(params: np.ndarray, param_names: Sequence[str], predictors: Mapping[str, np.ndarray],
              n_components: int = 3) -> dict:
    """The JSON-ready summary (explained variance of every component, loadings and predictor
    correlations of the leading ones) plus ``arrays`` (loadings, scores) for zarr/figures."""
    res = pca(params)
    corr = predictor_correlations(res["scores"], predictors, n_components)
    comps = {}
    for c in range(min(n_components, res["loadings"].shape[0])):
        load = res["loadings"][c]
        order = np.argsort(-np.abs(load))
        comps[f"PC{c + 1}"] = {
            "explained": float(res["explained"][c]),
            "loadings": {param_names[i]: float(load[i]) for i in range(len(param_names))},
            "top_parameters": [[param_names[i], float(load[i])] for i in order[:6]],
            "predictor_r": corr[f"PC{c + 1}"],
            "top_predictors": [[k, v] for k, v in top_predictors(corr[f"PC{c + 1}"])]}
    return {"explained": [float(x) for x in res["explained"]], "components": comps,
            "arrays": res}
