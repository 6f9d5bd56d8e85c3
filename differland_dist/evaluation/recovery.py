"""Parameter recovery: how well the estimated parameters match the true ones of a synthetic
store, per split, on the physical and the network's unbounded scale."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from differland_dist.data.store import PixelStore
from differland_dist.evaluation import metrics
from differland_dist.evaluation.blocks import output_params
from differland_dist.evaluation.streams import SPLITS
from differland_dist.vocabulary.parameters import PARAM_NAMES
from differland_dist.model import calendar
from differland_dist.vocabulary.parameters import all_bounds, to_bounded, to_unbounded


def _unbounded(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The network's unbounded scale of physical values (``to_unbounded``, float64), with
    values on or past a bound moved just inside it (the transform is infinite there)."""
    return to_unbounded(np.clip(np.asarray(p, np.float64), lo * (1 + 1e-7), hi * (1 - 1e-7)), lo, hi)


def finite_median(values) -> float:
    """The median of the finite values; NaN if there is none."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def parameter_recovery(true: np.ndarray, est: np.ndarray, split: np.ndarray,
                       names: Sequence[str] = PARAM_NAMES,
                       true_x: np.ndarray | None = None,
                       lat: np.ndarray | None = None) -> dict[str, Any]:
    """Recovery of true parameters (P, 40) by estimates (P, 40) per split: per parameter
    ``r2`` (1 - SSE/SST vs the 1:1 line, physical values), ``r2_unbounded`` (same on the
    network's unbounded scale; ``true_x`` when given), ``r``, ``n``; and median ``r2``.
    With ``lat`` (P,), phenology dates are compared as phases of the local calendar
    (:mod:`differland_dist.model.calendar`: a date a year later is the same model)."""
    lo, hi = all_bounds()
    xt = _unbounded(true, lo, hi) if true_x is None else np.asarray(true_x, np.float64)
    xe = _unbounded(est, lo, hi)
    if lat is not None:
        centre = calendar.centres(xt, lat, names)  # the estimate's dates in the truth's window
        xt, xe = calendar.align(xt, lat, names, centre), calendar.align(xe, lat, names, centre)
        dates = calendar.date_columns(names)
        true, est = np.array(true, np.float64), np.array(est, np.float64)
        true[:, dates] = to_bounded(xt[:, dates], lo[dates], hi[dates])
        est[:, dates] = to_bounded(xe[:, dates], lo[dates], hi[dates])
    out = {}
    for code, sp in enumerate(SPLITS):
        sel = np.asarray(split) == code
        phys = metrics.recovery(true[sel], est[sel], names)
        unb = metrics.recovery(xt[sel], xe[sel], names)
        params = {n: {"r2": phys[n]["r2"], "r2_unbounded": unb[n]["r2"], "r": phys[n]["r"],
                      "n": phys[n]["n"]} for n in names}
        out[sp] = {"parameters": params,
                   "median_r2": finite_median([v["r2"] for v in params.values()]),
                   "median_r2_unbounded": finite_median([v["r2_unbounded"] for v in params.values()])}
    return out


def recovery_from_store(store: PixelStore, group, split: np.ndarray | None = None) -> dict | None:
    """:func:`parameter_recovery` of the output's parameters, for stores holding
    ``true_params`` (synthetic stores); None otherwise."""
    if "true_params" not in store.array_names:
        return None
    names = [str(n) for n in np.asarray(store.ds["param"].values)] if "param" in store.array_names \
        else list(PARAM_NAMES)
    idx = [names.index(n) for n in PARAM_NAMES]
    true = np.asarray(store.array("true_params")[:], np.float64)[:, idx]
    tx = (np.asarray(store.array("true_x")[:], np.float64)[:, idx]
          if "true_x" in store.array_names else None)
    lat = np.asarray(store.array("lat")[:], np.float64)
    return parameter_recovery(true, output_params(group), store.split if split is None else split,
                              true_x=tx, lat=lat)
