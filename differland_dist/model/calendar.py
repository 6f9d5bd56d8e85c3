"""Phenology dates as phases of the local seasonal calendar.

DALEC's leaf-onset and leaf-fall dates (``Bday``, ``Fday``, days in [365.25, 1461]) act through
sin² with a one-year period, so a date and the same date a year later are the same model: a
trained network may put them in any of the three years its bounds allow, and a member in the
second year and one in the third average to nonsense. Southern seasons are half a year later,
so the network's hemisphere input shifts them. The analyses therefore compare dates as phases:
southern pixels shifted back half a year, every value wrapped to one year centred on the
circular mean of the map, placed in the middle year of the bounds (so it stays in bounds) and
mapped back to the unbounded space. Other parameters pass through unchanged.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from differland_dist.vocabulary.parameters import PHENO_NAMES, all_bounds, to_bounded, to_unbounded

YEAR = 365.25
#: The southern hemisphere's seasons lag the northern ones by half a year.
SOUTH_SHIFT = YEAR / 2
#: The year of the bounds [365.25, 1461] the phases are placed in (days 730.5-1095.75).
_MIDDLE_YEAR = 2 * YEAR


def date_columns(names: Sequence[str]) -> list[int]:
    """Indices of the phenology dates among parameter ``names``."""
    return [j for j, n in enumerate(names) if n in PHENO_NAMES]


def _circular_mean(days: np.ndarray, axis=None) -> np.ndarray:
    """Circular-mean day of year in [0, 365.25) over ``axis`` (NaN ignored)."""
    a = 2 * np.pi * np.asarray(days, np.float64) / YEAR
    with np.errstate(invalid="ignore"):
        return (np.arctan2(np.nanmean(np.sin(a), axis=axis), np.nanmean(np.cos(a), axis=axis))
                * YEAR / (2 * np.pi)) % YEAR


def _middle_year(days: np.ndarray, centre) -> np.ndarray:
    """``days`` moved by whole years to within half a year of ``centre`` (day of year), in the
    middle year of the bounds."""
    return _MIDDLE_YEAR + centre + (days - centre + SOUTH_SHIFT) % YEAR - SOUTH_SHIFT


def _aligned_days(x: np.ndarray, lat: np.ndarray, j: int) -> np.ndarray:
    """(..., P) unbounded column j -> days, southern pixels shifted back half a year."""
    lo, hi = all_bounds()
    d = to_bounded(np.asarray(x, np.float64), lo[j], hi[j])
    return d - SOUTH_SHIFT * (np.asarray(lat) < 0)


def centres(x: np.ndarray, lat: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Circular-mean day of year (in [0, 365.25)) of each date parameter of ``x`` (..., P, K)
    over every member and pixel, after the hemisphere shift."""
    return {names[j]: float(_circular_mean(_aligned_days(x[..., j], lat, j))) for j in date_columns(names)}


def align(x: np.ndarray, lat: np.ndarray, names: Sequence[str],
          centre: Mapping[str, float] | None = None) -> np.ndarray:
    """(..., P, K) unbounded maps -> the same with each date column replaced by its phase:
    hemisphere-shifted, wrapped to within half a year of ``centre[name]`` (day of year; default
    :func:`centres` of ``x``) and placed in the middle year of the bounds. ``lat`` (P,)."""
    cols = date_columns(names)
    if not cols:
        return x
    c = dict(centre) if centre is not None else centres(x, lat, names)
    lo, hi = all_bounds()
    out = np.array(x, np.float64, copy=True)
    for j in cols:
        out[..., j] = to_unbounded(_middle_year(_aligned_days(out[..., j], lat, j), c[names[j]]), lo[j], hi[j])
    return out


class AlignedFunction:
    """A function of raw features (n, F) (``lat`` last) -> unbounded parameters (n, K), its
    date outputs as phases around fixed ``centre`` (:func:`align`): what SHAP explains."""

    def __init__(self, f, names: Sequence[str], centre: Mapping[str, float]):
        self.f, self.names, self.centre = f, list(names), dict(centre)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float64)
        return align(self.f(X), X[:, -1], self.names, self.centre)


def same_year(days: np.ndarray) -> np.ndarray:
    """(M, ...) dates (days) of M members -> the same dates, each moved by whole years to
    within half a year of the members' circular mean at its position, in the middle year of
    the bounds: still valid dates (no hemisphere shift), whose mean, sd and quantiles over
    members mean something."""
    d = np.asarray(days, np.float64)
    return _middle_year(d, _circular_mean(d, axis=0))
