"""Carbon-cycle products of an evaluation: global annual totals, zonal means, skill maps.

Global annual total of a flux series F (g m-2 d-1 of carbon, a mean rate over each step) in
PgC yr-1, for calendar year y made of the steps t of that year (``steps_per_year`` consecutive
steps, whole years only)::

    total_y = sum_t sum_p F[p, t] * days[t] * area[p] / 1e15

with ``days[t]`` the step's length in days (``step_days``, else ``365.25 / steps_per_year``)
and ``area[p]`` the pixel's grid-cell area in m2 (``pixel_area``:
``R^2 * dlon * |sin(lat_n) - sin(lat_s)|``, R = 6371007.181 m). g -> Pg is 1e15.

Zonal mean of a series at a latitude row: the area-weighted mean over the row's pixels of
each pixel's time mean after warm-up. Skill maps: per pixel, the metrics of its own series
(``metrics.row_scores``) for every pixel-level stream, on the grid.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from differland_dist.evaluation import metrics

#: Series given as global annual totals (carbon fluxes, g m-2 d-1).
TOTAL_SERIES = ("gpp", "nee", "nbe", "fire")
#: Series given as zonal means.
ZONAL_SERIES = ("gpp", "nee", "nbe", "fire", "et", "lai")
#: Metrics of the per-pixel skill maps.
SKILL_METRICS = ("nse", "kge", "r", "bias")
GRAMS_PER_PG = 1e15


def step_days(days: np.ndarray | None, n_time: int, steps_per_year: int) -> np.ndarray:
    """(T,) length of each step in days: the output's ``step_days`` (the input store's
    ``delta_t``), else equal steps of a 365.25-day year."""
    if days is not None:
        return np.asarray(days, np.float64)
    return np.full(n_time, 365.25 / steps_per_year)


class GlobalTotals:
    """Accumulates sum_p F[p, t] * area[p] (g d-1 per step) of flux series over pixel blocks."""

    def __init__(self, names: Sequence[str], n_time: int):
        self.names = tuple(names)
        self.sums = {n: np.zeros(int(n_time)) for n in self.names}

    def add(self, series: Mapping[str, np.ndarray], area: np.ndarray) -> None:
        """series: name -> (P, T) g m-2 d-1; area: (P,) m2."""
        a = np.asarray(area, np.float64)
        for n in self.names:
            self.sums[n] += np.einsum("pt,p->t", np.asarray(series[n], np.float64), a)

    def result(self, days: np.ndarray, steps_per_year: int) -> dict[str, np.ndarray]:
        """name -> (Y,) PgC yr-1 of the whole years (see the module docstring)."""
        return {n: annual_totals(s, days, steps_per_year) for n, s in self.sums.items()}


def annual_totals(global_rate: np.ndarray, days: np.ndarray, steps_per_year: int) -> np.ndarray:
    """(T,) global rates (g d-1) -> (Y,) totals in Pg per year over the whole years."""
    per_step = np.asarray(global_rate, np.float64) * np.asarray(days, np.float64)  # g per step
    Y = per_step.size // steps_per_year
    return per_step[: Y * steps_per_year].reshape(Y, steps_per_year).sum(1) / GRAMS_PER_PG


class ZonalMeans:
    """Area-weighted sums of per-pixel time means per latitude row, over pixel blocks."""

    def __init__(self, names: Sequence[str], n_lat: int):
        self.names = tuple(names)
        self.wsum = {n: np.zeros(int(n_lat)) for n in self.names}
        self.area = np.zeros(int(n_lat))

    def add(self, series: Mapping[str, np.ndarray], area: np.ndarray, row: np.ndarray) -> None:
        """series: name -> (P, T') after warm-up; area (P,) m2; row (P,) latitude rows."""
        a = np.asarray(area, np.float64)
        r = np.asarray(row, np.int64)
        np.add.at(self.area, r, a)
        for n in self.names:
            np.add.at(self.wsum[n], r, a * np.asarray(series[n], np.float64).mean(axis=1))

    def result(self) -> dict[str, np.ndarray]:
        """name -> (n_lat,) area-weighted zonal means (NaN for rows without pixels)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return {n: np.where(self.area > 0, w / self.area, np.nan) for n, w in self.wsum.items()}


def pixel_skill(obs: np.ndarray, sim: np.ndarray, mask: np.ndarray,
                min_obs: int = 3) -> dict[str, np.ndarray]:
    """Per pixel (row) skill of (P, X) comparables: :data:`SKILL_METRICS` -> (P,) float32 and
    ``n``; NaN where a pixel has fewer than ``min_obs`` observations (bias: fewer than 1)."""
    rs = metrics.row_scores(obs, sim, mask)
    n = np.asarray(rs["n"])
    out = {"n": n.astype(np.float32)}
    for k in SKILL_METRICS:
        need = 1 if k == "bias" else max(1, int(min_obs))
        out[k] = np.where(n >= need, rs[k], np.nan).astype(np.float32)
    return out
