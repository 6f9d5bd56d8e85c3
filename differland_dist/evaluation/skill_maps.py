"""Per-pixel skill maps as the paper's ``evaluate_performance.py`` makes them (pure numpy).

Read against ``experiments/evaluate_performance.py`` of JianingFang/DifferLand_Global. Every
function works on a block of series, shape (P, T): P pixels (or 4° x 5° cells), T steps after
the warm-up, NaN where a value is missing (an unobserved step). Rows are independent, so a
block-by-block computation equals the whole-array one.

* **Correlation** (:func:`paper_correlation`, the reference's ``lag_linregress_3D``):
  ``cov / (sd_sim * sd_obs)`` with ``cov = sum over steps where both are finite of
  (sim - mean_sim)(obs - mean_obs) / n_both``, but each mean and (population) standard
  deviation taken over that side's *own* finite steps. With the same gaps on both sides this is
  Pearson's r; where only the observations have gaps (the usual case: the model is complete) it
  is not, and may even leave [-1, 1], as the reference's maps do. NaN below 2 common steps.
* **RMSE** (:func:`rmse`): over the steps where both are finite.
* **Annual**: calendar-year means of the finite values (xarray ``resample(time="1YE").mean()``),
  :func:`annual_means`; partial years count as the reference's resampling counts them.
* **Anomaly** (:func:`anomalies`, the reference's ``detrend_then_remove_msc``): per pixel, the
  least-squares line in the step index over the finite steps is subtracted, then the mean of
  the detrended values of each calendar month (the mean seasonal cycle) is subtracted. Pixels
  with fewer than 2 finite steps are NaN.
* **Trend** (:func:`trend`, the reference's ``linregress(arange(T)[ok], y[ok])`` of
  ``nan_filtered_trend``): the least-squares slope against the step index, reported per year
  (the reference's slope is per step: ours = slope x ``steps_per_year``), and its two-sided
  p-value (t test of a zero slope with n - 2 degrees of freedom, as ``scipy.stats.linregress``).
  Slope NaN below 2 finite steps; p-value NaN below 3 (linregress gives 0 or 1 at n = 2) and
  for a constant series (as linregress of scipy >= 1.14: its r is undefined).
* **r2** (:func:`swapped_r2`): the reference's ``r2_*`` maps call
  ``r2_score(simulated, observed)``: 1 - SSE / SST of the *simulated* series (both finite).
* **4° x 5° coarsening** (:func:`cell_index`, :class:`CoarseMeans`): the reference's
  ``coarsen_numpy`` averages 16 x 20 blocks of its 0.25° grid (origin 90° N, 180° W) with
  ``np.nanmean``: the plain mean of the finite cells at each step, no area weights, each side
  over its own finite cells. Here a pixel belongs to the 4° x 5° cell holding its centre
  (``floor((90 - lat) / 4)``, ``floor((lon + 180) / 5)``), which is the same blocks on a 0.25°
  grid and works for any grid.
"""

from __future__ import annotations

import warnings
from typing import Mapping

import numpy as np
from scipy import stats

#: The 4° x 5° grid of the reference's NBE coarsening: 45 rows from 90° N, 72 columns from 180° W.
COARSE_DLAT, COARSE_DLON = 4.0, 5.0
COARSE_NLAT, COARSE_NLON = 45, 72

#: Map names per stream, in output order.
MAPS = ("r_monthly", "rmse_monthly", "r_annual", "rmse_annual", "r_anomaly", "rmse_anomaly",
        "r2_monthly", "trend_sim", "trend_p_sim", "trend_obs", "trend_p_obs", "n_obs")


def _f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def paper_correlation(sim: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """(P,) correlation of (P, T) simulated and observed series as the reference computes it
    (see the module docstring); NaN where fewer than 2 steps are finite on both sides or a
    side is constant."""
    x, y = _f64(sim), _f64(obs)
    both = np.isfinite(x) & np.isfinite(y)
    n = both.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN, as the reference
        xm, ym = np.nanmean(x, axis=1), np.nanmean(y, axis=1)
        xs, ys = np.nanstd(x, axis=1), np.nanstd(y, axis=1)
        prod = np.where(both, (x - xm[:, None]) * (y - ym[:, None]), 0.0)
        cor = prod.sum(axis=1) / n / (xs * ys)
    return np.where((n >= 2) & np.isfinite(cor), cor, np.nan)


def rmse(sim: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """(P,) root mean squared difference over the steps where both are finite (NaN if none)."""
    x, y = _f64(sim), _f64(obs)
    both = np.isfinite(x) & np.isfinite(y)
    n = both.sum(axis=1)
    sq = np.where(both, (x - y) ** 2, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.sqrt(sq / np.maximum(n, 1)), np.nan)


def swapped_r2(sim: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """(P,) ``r2_score(sim, obs)`` over the steps where both are finite: 1 - sum (obs - sim)^2 /
    sum (sim - mean sim)^2 (the reference's argument order); NaN if none or sim constant."""
    x, y = _f64(sim), _f64(obs)
    both = np.isfinite(x) & np.isfinite(y)
    n = both.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = np.where(both, x, 0.0).sum(axis=1) / n
        sst = np.where(both, (x - xm[:, None]) ** 2, 0.0).sum(axis=1)
        sse = np.where(both, (y - x) ** 2, 0.0).sum(axis=1)
        return np.where((n > 0) & (sst > 0), 1.0 - sse / sst, np.nan)


def _centred(v: np.ndarray):
    """For the least-squares line of each row's finite values against the step index: (the
    (1, T) step index, finite count n (P,), mean step xm and mean value ym (P,), and the
    centred step dx and value dy (P, T), zero at non-finite steps)."""
    ok = np.isfinite(v)
    t_idx = np.arange(v.shape[1], dtype=np.float64)[None, :]
    n = ok.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = np.where(ok, t_idx, 0.0).sum(axis=1) / n
        ym = np.where(ok, v, 0.0).sum(axis=1) / n
        dx = np.where(ok, t_idx - xm[:, None], 0.0)
        dy = np.where(ok, v - ym[:, None], 0.0)
    return t_idx, n, xm, ym, dx, dy


def trend(y: np.ndarray, steps_per_year: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (P, T) series: (slope in units per year, two-sided p-value), both (P,).

    The least-squares line of the finite values against the step index 0..T-1 (the slope per
    step times ``steps_per_year``); p-value of the t statistic r sqrt((n - 2) / (1 - r^2)) with
    n - 2 degrees of freedom, as ``scipy.stats.linregress`` (NaN below 3 finite steps and
    for a constant series)."""
    v = _f64(y)
    _, n, _, _, dx, dy = _centred(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        sxx, sxy, syy = (dx * dx).sum(1), (dx * dy).sum(1), (dy * dy).sum(1)
        slope = np.where((n >= 2) & (sxx > 0), sxy / sxx, np.nan)
        r = np.where((sxx > 0) & (syy > 0), sxy / np.sqrt(sxx * syy), np.nan)
        r = np.clip(r, -1.0, 1.0)
        df = n - 2
        tiny = 1.0e-20  # linregress's guard against r = +-1
        tstat = r * np.sqrt(df / ((1.0 - r + tiny) * (1.0 + r + tiny)))
    p = np.full(v.shape[0], np.nan)
    good = (n >= 3) & np.isfinite(r)
    p[good] = 2.0 * stats.t.sf(np.abs(tstat[good]), df[good])
    return slope * float(steps_per_year), p


def annual_means(x: np.ndarray, year: np.ndarray) -> np.ndarray:
    """(P, T) series -> (P, Y) means of each calendar year's finite values (sorted years of the
    (T,) ``year`` labels; NaN where a year has none)."""
    v = _f64(x)
    yrs = np.unique(np.asarray(year))
    out = np.full((v.shape[0], yrs.size), np.nan)
    for k, yr in enumerate(yrs):
        cols = v[:, np.asarray(year) == yr]
        cnt = np.isfinite(cols).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, k] = np.where(cnt > 0, np.where(np.isfinite(cols), cols, 0.0).sum(1) / cnt, np.nan)
    return out


def detrend(x: np.ndarray) -> np.ndarray:
    """(P, T) series minus each row's least-squares line in the step index over its finite
    steps (NaN stays NaN; rows with fewer than 2 finite steps become NaN)."""
    v = _f64(x)
    t_idx, n, xm, ym, dx, dy = _centred(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        sxx = (dx * dx).sum(1)
        slope = np.where(sxx > 0, (dx * dy).sum(1) / sxx, 0.0)
        out = v - (ym[:, None] + slope[:, None] * (t_idx - xm[:, None]))
    out[n < 2] = np.nan
    return out


def anomalies(x: np.ndarray, month: np.ndarray) -> np.ndarray:
    """(P, T) anomalies: :func:`detrend`, then minus the mean of the detrended finite values of
    the same calendar ``month`` (the (T,) labels: 0..11, or the step's place in the year)."""
    d = detrend(x)
    month = np.asarray(month)
    out = np.full_like(d, np.nan)
    for m in np.unique(month):
        cols = month == m
        seg = d[:, cols]
        cnt = np.isfinite(seg).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            clim = np.where(cnt > 0, np.where(np.isfinite(seg), seg, 0.0).sum(1) / cnt, np.nan)
        out[:, cols] = seg - clim[:, None]
    return out


def block_maps(sim: np.ndarray, obs: np.ndarray, year: np.ndarray, month: np.ndarray,
               steps_per_year: int) -> dict[str, np.ndarray]:
    """Every map of :data:`MAPS` for a block: name -> (P,) float32.

    Args:
      sim, obs: (P, T) simulated and observed series after the warm-up (NaN = missing).
      year, month: (T,) calendar year and month labels of the steps (:func:`calendar`).
      steps_per_year: converts the per-step trend to per year.
    """
    sim, obs = _f64(sim), _f64(obs)
    sim_y, obs_y = annual_means(sim, year), annual_means(obs, year)
    sim_a, obs_a = anomalies(sim, month), anomalies(obs, month)
    ts, ps = trend(sim, steps_per_year)
    to, po = trend(obs, steps_per_year)
    out = {"r_monthly": paper_correlation(sim, obs), "rmse_monthly": rmse(sim, obs),
           "r_annual": paper_correlation(sim_y, obs_y), "rmse_annual": rmse(sim_y, obs_y),
           "r_anomaly": paper_correlation(sim_a, obs_a), "rmse_anomaly": rmse(sim_a, obs_a),
           "r2_monthly": swapped_r2(sim, obs), "trend_sim": ts, "trend_p_sim": ps,
           "trend_obs": to, "trend_p_obs": po,
           "n_obs": (np.isfinite(obs) & np.isfinite(sim)).sum(axis=1)}
    return {k: np.asarray(out[k], np.float32) for k in MAPS}


def calendar(times: np.ndarray, steps_per_year: int, first_step: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
    """(year, month) labels (T,) of the steps: calendar year and month (0..11) of decoded
    ``datetime64`` times, as xarray's ``time.year`` / ``time.month`` group; for undecoded
    (numeric) times, whole years of ``steps_per_year`` steps counted from the store's first
    step (``first_step`` = the index of ``times[0]`` in the store) and the place in the year."""
    t = np.asarray(times)
    if np.issubdtype(t.dtype, np.datetime64):
        months = t.astype("datetime64[M]").astype(np.int64)
        return months // 12 + 1970, months % 12
    idx = np.arange(t.size, dtype=np.int64) + int(first_step)
    return idx // int(steps_per_year), idx % int(steps_per_year)


# -- 4° x 5° -----------------------------------------------------------------------------------------
def cell_index(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(P,) flat index row * 72 + column of the 4° x 5° cell holding each pixel centre
    (rows from 90° N southwards, columns from 180° W eastwards; longitudes wrapped to
    [-180, 180))."""
    la = np.asarray(lat, np.float64)
    lo = (np.asarray(lon, np.float64) + 180.0) % 360.0
    i = np.clip(np.floor((90.0 - la) / COARSE_DLAT), 0, COARSE_NLAT - 1).astype(np.int64)
    j = np.clip(np.floor(lo / COARSE_DLON), 0, COARSE_NLON - 1).astype(np.int64)
    return i * COARSE_NLON + j


def coarse_grid() -> dict[str, np.ndarray]:
    """Centres and edges of the 4° x 5° grid: ``lat`` (45,) 88 .. -88, ``lon`` (72,) -177.5 ..
    177.5, ``lat_bnds`` (45, 2) [north, south], ``lon_bnds`` (72, 2) [west, east]."""
    north = 90.0 - COARSE_DLAT * np.arange(COARSE_NLAT)
    west = -180.0 + COARSE_DLON * np.arange(COARSE_NLON)
    return {"lat": north - COARSE_DLAT / 2, "lon": west + COARSE_DLON / 2,
            "lat_bnds": np.stack([north, north - COARSE_DLAT], 1),
            "lon_bnds": np.stack([west, west + COARSE_DLON], 1)}


class CoarseMeans:
    """Per 4° x 5° cell and step, the mean of the finite values of the pixels it holds,
    accumulated over pixel blocks (sums and counts of (cells, T), float64)."""

    def __init__(self, cells: np.ndarray, n_time: int, names=("sim", "obs")):
        #: the occupied cells (sorted flat indices) of all pixels
        self.cells = np.unique(np.asarray(cells, np.int64))
        self.sums = {n: np.zeros((self.cells.size, int(n_time))) for n in names}
        self.counts = {n: np.zeros((self.cells.size, int(n_time))) for n in names}

    def add(self, series: Mapping[str, np.ndarray], cells: np.ndarray) -> None:
        """series: name -> (P, T) values (NaN = missing); cells: (P,) flat cell indices."""
        k = np.searchsorted(self.cells, np.asarray(cells, np.int64))
        for n, x in series.items():
            v = _f64(x)
            ok = np.isfinite(v)
            np.add.at(self.sums[n], k, np.where(ok, v, 0.0))
            np.add.at(self.counts[n], k, ok.astype(np.float64))

    def result(self) -> dict[str, np.ndarray]:
        """name -> (cells, T) means (NaN where a cell has no finite value at a step)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return {n: np.where(self.counts[n] > 0, self.sums[n] / self.counts[n], np.nan)
                    for n in self.sums}


def coarsen_4x5(values: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(P, T) pixel series at centres ``lat``, ``lon`` (P,) -> (45, 72, T) 4° x 5° means of the
    finite values per step (NaN where a cell has none): the reference's ``coarsen_numpy``
    without the repeat back to the fine grid."""
    v = _f64(values)
    cells = cell_index(lat, lon)
    acc = CoarseMeans(cells, v.shape[1], names=("x",))
    acc.add({"x": v}, cells)
    out = np.full((COARSE_NLAT * COARSE_NLON, v.shape[1]), np.nan)
    out[acc.cells] = acc.result()["x"]
    return out.reshape(COARSE_NLAT, COARSE_NLON, v.shape[1])


def to_coarse_grid(values: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(C,) values of the occupied ``cells`` (flat indices) -> (45, 72) float32 map (NaN elsewhere)."""
    out = np.full(COARSE_NLAT * COARSE_NLON, np.nan, np.float32)
    out[np.asarray(cells, np.int64)] = values
    return out.reshape(COARSE_NLAT, COARSE_NLON)

