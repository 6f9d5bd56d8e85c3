"""Ensemble spread of each parameter against its spatial spread: which parameters the
ensemble pins down."""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: A parameter whose median ensemble sd is at least this fraction of its spatial sd (of the
#: ensemble-mean map) is "not pinned down": the members disagree as much as places differ.
PINNED_MAX_RATIO = 0.5


def spread(members: np.ndarray, param_names: Sequence[str], threshold: float = PINNED_MAX_RATIO) -> dict:
    """Per parameter, from (M, P, K) member maps (unbounded space): ``spatial_sd`` (sd over
    pixels of the ensemble mean), ``ensemble_sd`` (median over pixels of the member sd),
    ``ratio`` = ensemble_sd / spatial_sd, ``pinned`` (ratio < threshold; false with one
    member: nothing to compare). Also ``ratio_map`` (P, K) for maps."""
    x = np.asarray(members, np.float64)
    M = x.shape[0]
    mean = x.mean(axis=0)
    sd = x.std(axis=0, ddof=1) if M > 1 else np.full(mean.shape, np.nan)
    spatial = mean.std(axis=0)
    spatial = np.where(spatial > 1e-9 * np.maximum(1.0, np.abs(mean).max(axis=0)), spatial, 0.0)  # rounding
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_map = sd / np.where(spatial > 0, spatial, np.nan)
    per = {}
    for j, n in enumerate(param_names):
        ens = float(np.median(sd[:, j])) if M > 1 else float("nan")
        r = ens / spatial[j] if M > 1 and spatial[j] > 0 else float("nan")
        per[n] = {"spatial_sd": float(spatial[j]), "ensemble_sd": ens, "ratio": r,
                  "pinned": bool(np.isfinite(r) and r < threshold)}
    return {"members": M, "threshold": threshold, "parameters": per,
            "not_pinned": [n for n, v in per.items() if not v["pinned"]], "ratio_map": ratio_map}
