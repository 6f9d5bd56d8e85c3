"""CF time bounds of an output's steps: each step's mid-step time -/+ half its length
(``step_days``), so ``cell_methods = "time: mean"`` names the interval it averages over."""

from __future__ import annotations

import numpy as np
import xarray as xr

BOUNDS = "time_bnds"


def with_time_bounds(time: xr.Variable, step_days: np.ndarray) -> dict[str, xr.Variable]:
    """``time`` (T,) in ``days since ...`` with a ``bounds`` attribute and ``time_bnds``
    (T, nv=2) [start, end] in the same units (bounds carry no attributes of their own, CF 7.1).
    Empty when the time units are not days (nothing to add rather than wrong bounds)."""
    if not str(time.attrs.get("units", "")).startswith("days since"):
        return {}
    t = np.asarray(time.values, np.float64)
    half = 0.5 * np.asarray(step_days, np.float64)
    return {"time": xr.Variable(time.dims, time.values, {**time.attrs, "bounds": BOUNDS}),
            BOUNDS: xr.Variable(("time", "nv"), np.stack([t - half, t + half], axis=1))}
