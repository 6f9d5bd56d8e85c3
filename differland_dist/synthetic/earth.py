"""The synthetic Earth: a deterministic pixel store whose "true" parameters are known.

Land pixels come from a real land-sea mask (the GLOBE 1 km mask shipped by the
``global-land-mask`` package), averaged to the chosen grid (a cell is land if at least half of
it is land; Antarctica, south of 60 S, is left out). Climate and predictors are smooth random
fields on the sphere (sums of random plane waves in 3-D, so the same seed gives the same
geography at every resolution) shaped by latitude: zonal temperature and rainfall profiles, a
lapse rate, seasonal cycles by hemisphere, insolation from orbital geometry, spatially
coherent monthly anomalies. A hidden smooth relation (a fixed random one-hidden-layer network
on standardised predictors) gives the unbounded DALEC parameters; DALEC is run with them and
its outputs, with noise and realistic coverage, are the observations.

Everything is drawn from ``numpy.random.default_rng([seed, k])`` streams, one per purpose, and
written without timestamps, so the same arguments give the same store byte for byte.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time as _time
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import xarray as xr

from differland_dist.data import schema, splits
from differland_dist.data.batch import assemble_forcing
from differland_dist.data.store import check_target, write_store
from differland_dist.data.tiling import monthly_axis, patch_tile  # re-exported: they lived here
from differland_dist.errors import DifferlandError
from differland_dist.model import simulate
from differland_dist.vocabulary.dalec_io import OUTPUT_INDEX
from differland_dist.vocabulary.parameters import (
    PHENOLOGY_PARAMETERS, PROCESS_PARAMETERS, all_bounds, to_bounded)
from differland_dist.synthetic.truth_design import (
    PARAM_NAMES_ALL, PARAM_UNITS_ALL, TRUTH_FEATURES, TruthDesign, apply_truth, build_truth,
    load_design, shipped_designs)

log = logging.getLogger(__name__)

DEFAULT_RESOLUTION = 5.0
DEFAULT_START = 2001
DEFAULT_YEARS = 5
# Purposes of the random streams (never reorder: that changes every store).
(_RNG_GEOGRAPHY, _RNG_ANOMALY, _RNG_FIRE, _RNG_SPLIT, _RNG_TRUTH, _RNG_NOISE, _RNG_COVER,
 _RNG_WEATHER) = range(8)


def _rng(seed: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), purpose])


# -- the grid -------------------------------------------------------------------------------
_MASK_CELLS_PER_DEG = 120  # the GLOBE mask: 1/120 degree


def _mask_path() -> str:
    spec = importlib.util.find_spec("global_land_mask")
    if spec is None or not spec.origin:
        raise DifferlandError("the land-sea mask needs the 'global-land-mask' package "
                              "(pip install global-land-mask)")
    return os.path.join(os.path.dirname(spec.origin), "globe_combined_mask_compressed.npz")


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    n0, n1 = a.shape
    return a.reshape(n0 // k, k, n1 // k, k).mean(axis=(1, 3), dtype=np.float64)


@lru_cache(maxsize=4)
def _land_fraction_at(cells_per_mask_cell: int) -> np.ndarray:
    """Land fraction (rows from the north, columns from 180 W) of cells of k x k mask cells."""
    t0 = _time.perf_counter()
    with np.load(_mask_path()) as f:
        ocean = f["mask"]  # True = ocean, (21600, 43200), rows from 90 N
    frac = 1.0 - _block_mean(ocean, cells_per_mask_cell)
    del ocean
    log.debug("land-sea mask averaged to %d-cell blocks in %.1f s", cells_per_mask_cell,
              _time.perf_counter() - t0)
    return frac


def land_fraction(resolution: float) -> np.ndarray:
    """(180/r, 360/r) land fraction of each grid cell, row 0 northernmost, column 0 at 180 W."""
    k = _check_resolution(resolution)
    q = _MASK_CELLS_PER_DEG // 4  # quarter-degree cells: computed once, coarser grids from them
    if k % q == 0 and (180 * 4) % (k // q) == 0 and (360 * 4) % (k // q) == 0:
        return _block_mean(_land_fraction_at(q), k // q)
    return _land_fraction_at(k)


def _check_resolution(resolution: float) -> int:
    k = resolution * _MASK_CELLS_PER_DEG
    if not (resolution > 0 and abs(k - round(k)) < 1e-6 and round(k) >= 1
            and 21600 % round(k) == 0 and 43200 % round(k) == 0):
        raise DifferlandError(
            f"resolution {resolution!r} deg: must divide 180 degrees into whole cells of the "
            "1/120 deg land mask (e.g. 0.25, 0.5, 1, 2, 2.5, 3, 4, 5, 6, 10, 15)")
    return int(round(k))


class Grid(NamedTuple):
    """Land pixels of a regular lat-lon grid, in patch order."""

    lat: np.ndarray    # (P,) float32 cell-centre latitude
    lon: np.ndarray    # (P,) float32 cell-centre longitude
    row: np.ndarray    # (P,) int32, 0 = northernmost
    col: np.ndarray    # (P,) int32, 0 = westernmost (180 W)
    patch: np.ndarray  # (P,) int32, sorted
    shape: tuple[int, int]
    tile: tuple[int, int]  # rows x columns of grid cells per patch tile


def make_grid(resolution: float, max_patch_size: int = 320) -> Grid:
    """Land cells (>= 50 % land, north of 60 S) grouped into patches of rectangular tiles."""
    if max_patch_size < 1:
        raise DifferlandError(f"max_patch_size must be >= 1, got {max_patch_size}")
    frac = land_fraction(resolution)
    n_rows, n_cols = frac.shape
    lat_c = 90.0 - (np.arange(n_rows) + 0.5) * resolution
    land = (frac >= 0.5) & (lat_c[:, None] > -60.0)
    rows, cols = np.nonzero(land)
    if rows.size == 0:
        raise DifferlandError(f"no land pixels at resolution {resolution}")
    a, b = patch_tile(resolution, max_patch_size)
    tile_id = (rows // a) * (-(-n_cols // b)) + cols // b
    order = np.lexsort((cols, rows, tile_id))
    rows, cols, tile_id = rows[order], cols[order], tile_id[order]
    _, patch = np.unique(tile_id, return_inverse=True)
    return Grid(lat=(90.0 - (rows + 0.5) * resolution).astype(np.float32),
                lon=(-180.0 + (cols + 0.5) * resolution).astype(np.float32),
                row=rows.astype(np.int32), col=cols.astype(np.int32),
                patch=patch.astype(np.int32), shape=(n_rows, n_cols), tile=(a, b))


# -- time -----------------------------------------------------------------------------------
# -- smooth random fields -------------------------------------------------------------------
def _xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.deg2rad(lat.astype(np.float64)), np.deg2rad(lon.astype(np.float64))
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def smooth_fields(rng: np.random.Generator, xyz: np.ndarray, n: int, length: float,
                  waves: int = 48) -> np.ndarray:
    """(P, n) zero-mean unit-variance fields, correlation length ``length`` (radians).

    Each is sqrt(2/W) * sum of W cosines of random 3-D plane waves with wave vectors drawn from
    N(0, 1/length^2): a stationary Gaussian-like field with a squared-exponential covariance,
    defined everywhere on the sphere (independent of the grid).
    """
    k = rng.normal(0.0, 1.0 / length, size=(n, waves, 3))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, waves))
    out = np.empty((xyz.shape[0], n), dtype=np.float64)
    for i in range(n):
        out[:, i] = np.sqrt(2.0 / waves) * np.cos(xyz @ k[i].T + phase[i]).sum(axis=1)
    return out


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- predictors -----------------------------------------------------------------------------
_ZONAL_T = ([0, 10, 20, 30, 40, 50, 60, 70, 80, 90],
            [26, 26, 24, 19, 12, 4, -4, -12, -20, -25])
_ZONAL_P = ([0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90],
            [2200, 2000, 1500, 1000, 600, 400, 450, 700, 650, 450, 300, 200, 150])
#: Vegetation types: (MAT degC, log10 MAP) of their climatic optimum.
_PFT_CLIMATE = {"NF": (-1, 2.7), "DBF": (10, 2.95), "EBF": (25, 3.35), "MF": (5, 2.85),
                "SH": (16, 2.35), "SAV": (24, 2.95), "GRA": (8, 2.55), "WET": (2, 2.75),
                "CRO": (14, 2.85), "NVG": (20, 1.7)}


#: ``pft_climate_coupling`` of the geography before the setting existed (and the default: the
#: stores of earlier versions are reproduced bit for bit; docs/data.md has the measured
#: PFT -> MAT predictability at each value and the real-Earth-like one).
PFT_CLIMATE_COUPLING = 1.0


def check_coupling(value: float, what: str = "--pft-climate-coupling") -> float:
    """``value`` as a float in [0, 1]; a one-line DifferlandError naming ``what`` otherwise."""
    try:
        c = float(value)
    except (TypeError, ValueError):
        c = float("nan")
    if not 0.0 <= c <= 1.0:
        raise DifferlandError(f"{what} {value!r}: expected a number in [0, 1] (1 = vegetation "
                              "follows climate as in earlier stores, 0 = independent of it)")
    return c


def make_predictors(lat: np.ndarray, lon: np.ndarray, seed: int,
                    pft_climate_coupling: float = PFT_CLIMATE_COUPLING) -> dict[str, np.ndarray]:
    """The 20 static predictors (raw, float32) plus the climate fields the forcing needs.

    ``pft_climate_coupling`` c in [0, 1] scales the climatic (and, for wetlands, elevation)
    part of each vegetation type's score by c and raises the amplitude of its own random field
    from 0.8 to 0.8 + 1.7 (1 - c): at 1 vegetation follows climate as before (bit for bit),
    at 0 it is a random mosaic independent of climate. Canopy height (forests are tall where
    warm and wet) and stand age (younger under crops) keep their dependence on the PFTs."""
    c = check_coupling(pft_climate_coupling, "pft_climate_coupling")
    k = 0.8 + (1.0 - c) * 1.7  # 0.8 exactly at c = 1
    rng = _rng(seed, _RNG_GEOGRAPHY)
    xyz = _xyz(lat, lon)
    f = smooth_fields(rng, xyz, 8, 0.25)       # broad: climate, soils
    fm = smooth_fields(rng, xyz, 2, 0.08)      # narrow: mountains
    fp = smooth_fields(rng, xyz, len(_PFT_CLIMATE), 0.15)
    alat = np.abs(lat.astype(np.float64))
    elev = 40.0 + 500.0 * np.exp(0.55 * f[:, 0] + 0.75 * fm[:, 0])
    elev = np.clip(elev, 0.0, 6500.0)
    mat = np.interp(alat, *_ZONAL_T) - 0.0065 * elev + 3.0 * f[:, 1]
    mat = np.clip(mat, -30.0, 33.0)
    map_ = np.interp(alat, *_ZONAL_P) * np.exp(0.6 * f[:, 2] - 0.18) * (1 + 0.15 * np.tanh(fm[:, 1]))
    map_ = np.clip(map_, 30.0, 9000.0)
    logp = np.log10(map_)
    scores = []
    for j, (name, (t0, p0)) in enumerate(_PFT_CLIMATE.items()):
        s = c * (-((mat - t0) / 8.0) ** 2 - ((logp - p0) / 0.28) ** 2) + k * fp[:, j]
        if name == "NVG":  # deserts and the coldest land
            s = np.maximum(s, c * (-((mat + 18.0) / 6.0) ** 2) + k * fp[:, j])
        if name == "WET":
            s = s - c * elev / 800.0
        scores.append(s)
    pft = _softmax(1.3 * np.stack(scores, axis=1))
    forest = pft[:, :4].sum(axis=1)
    height = forest * (4.0 + 36.0 * _sigmoid((mat - 4.0) / 6.0) * _sigmoid((logp - 2.75) / 0.15))
    height = np.clip(height * np.exp(0.2 * f[:, 3]), 0.0, 60.0)
    age = np.clip((20.0 + 160.0 * _sigmoid(1.2 * f[:, 4])) * (1.0 - 0.5 * pft[:, 8]), 1.0, 400.0)
    dry = np.clip(1.0 - map_ / 1200.0, 0.0, 1.0)
    tex = _softmax(np.stack([0.4 + 0.8 * f[:, 5] + 1.5 * dry, 0.3 + 0.6 * f[:, 6],
                             0.6 * f[:, 7] + 0.8 * (mat > 18) * (1 - dry)], axis=1))
    sand, silt, clay = (100.0 * tex[:, i] for i in range(3))
    gravel = 3.0 + 30.0 * _sigmoid(0.8 * f[:, 5] + elev / 1500.0 - 1.5)
    bulk = np.clip(1.55 - 0.45 * tex[:, 2] - 0.2 * (mat < 0) * (1 - dry) + 0.05 * f[:, 6], 0.8, 1.9)
    out = {name: pft[:, j] for j, name in enumerate(_PFT_CLIMATE)}
    out.update(MAT=mat, MAP=map_, elevation=elev, canopy_height=height, forest_age=age,
               BULK_DEN=bulk, SAND=sand, SILT=silt, CLAY=clay, GRAVEL=gravel)
    out = {k: np.asarray(v, np.float32) for k, v in out.items()}
    out["_continentality"] = f[:, 3].astype(np.float32)  # internal: shapes the seasons
    return out


# -- forcing --------------------------------------------------------------------------------
def toa_radiation(lat: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """(P, T) daily mean top-of-atmosphere shortwave, MJ m-2 d-1 (orbital geometry)."""
    phi = np.deg2rad(lat.astype(np.float64))[:, None]
    d = doy.astype(np.float64)[None, :]
    dec = np.deg2rad(23.44) * np.sin(2 * np.pi * (284.0 + d) / 365.0)
    ecc = 1.0 + 0.033 * np.cos(2 * np.pi * d / 365.0)
    h0 = np.arccos(np.clip(-np.tan(phi) * np.tan(dec), -1.0, 1.0))
    q = (86400.0 / np.pi) * 1361.0 * ecc * (h0 * np.sin(phi) * np.sin(dec)
                                            + np.cos(phi) * np.cos(dec) * np.sin(h0))
    return np.maximum(q, 0.0) / 1e6


def _ar1(rng: np.random.Generator, n: int, T: int, rho: float) -> np.ndarray:
    e = rng.normal(size=(n, T))
    out = np.empty_like(e)
    out[:, 0] = e[:, 0]
    s = math.sqrt(1 - rho * rho)
    for t in range(1, T):
        out[:, t] = rho * out[:, t - 1] + s * e[:, t]
    return out


def make_forcing(lat, lon, pred: dict[str, np.ndarray], axis: dict[str, np.ndarray],
                 seed: int) -> dict[str, np.ndarray]:
    """Monthly forcing (float32): per-pixel series (P, T) and per-step co2 (T,)."""
    P, T = lat.shape[0], axis["time"].shape[0]
    xyz = _xyz(lat, lon)
    rng = _rng(seed, _RNG_ANOMALY)
    modes = smooth_fields(rng, xyz, 6, 0.3)                        # (P, 6)
    t_anom = modes @ _ar1(rng, 6, T, 0.6) / math.sqrt(6)            # ~1 K, spatially coherent
    p_anom = modes @ _ar1(rng, 6, T, 0.3) / math.sqrt(6)
    wx = _rng(seed, _RNG_WEATHER)
    lat64 = lat.astype(np.float64)[:, None]
    alat = np.abs(lat64)
    north = lat64 >= 0
    doy = axis["doy"].astype(np.float64)[None, :]
    mat = pred["MAT"].astype(np.float64)[:, None]
    map_d = pred["MAP"].astype(np.float64)[:, None] / 365.22
    cont = pred["_continentality"].astype(np.float64)[:, None]
    # temperature: coldest month ~ 20 Jan (north) / 20 Jul (south)
    amp = np.clip((1.0 + 0.25 * alat) * (1.0 + 0.2 * np.tanh(cont)), 0.5, 22.0)
    season = np.where(north, 1.0, -1.0) * np.cos(2 * np.pi * (doy - 20.0) / 365.25)
    t_mean = mat - amp * season + 1.2 * t_anom
    # precipitation: a summer rainy season strongest near 15 degrees, lognormal weather
    s = np.clip(0.9 * np.exp(-((alat - 15.0) / 12.0) ** 2) + 0.15 * np.tanh(cont), 0.0, 0.95)
    peak = np.where(north, 200.0, 20.0)
    shape = 1.0 + s * np.cos(2 * np.pi * (doy - peak) / 365.25)
    weather = np.exp(0.45 * p_anom + 0.35 * wx.normal(size=(P, T)) - 0.5 * (0.45**2 + 0.35**2))
    precip = np.clip(map_d * shape * weather, 0.0, 400.0)
    wet = precip / (precip + 2.0)
    dry = np.clip(1.0 - map_d * 365.22 / 1500.0, 0.0, 1.0)
    dtr = 6.0 + 9.0 * dry - 3.0 * wet
    t_min = t_mean - dtr / 2
    t_max = t_mean + dtr / 2
    swrad = np.maximum(toa_radiation(lat, axis["doy"]) * (0.76 - 0.36 * wet), 0.1)
    rh = np.clip(0.3 + 0.6 * wet, 0.15, 0.95)
    t_day = t_mean + dtr / 4
    vpd = 6.112 * np.exp(17.67 * t_day / (t_day + 243.5)) * (1.0 - rh)
    # fire: fire-prone warm, seasonally dry, grassy pixels burn now and then
    fr = _rng(seed, _RNG_FIRE)
    grassy = (pred["SAV"] + pred["GRA"] + pred["SH"]).astype(np.float64)[:, None]
    prone = _sigmoid(4.0 * grassy - 1.5 + 0.8 * cont) * (mat > 2.0)
    month_dry = np.clip(1.0 - precip / (map_d + 1e-6), 0.0, 1.0)
    burn = fr.uniform(size=(P, T)) < 0.25 * prone * month_dry
    burned = np.where(burn, np.minimum(fr.exponential(0.04, size=(P, T)), 0.8), 0.0)
    years = (axis["time"] - 15.5) / 365.25
    co2 = 370.5 + 1.9 * years + 0.012 * years**2 + 2.5 * np.sin(2 * np.pi * (axis["doy"] - 100) / 365.25)
    out = dict(t_min=t_min, t_max=t_max, swrad=swrad, vpd=vpd, precip=precip, burned_area=burned)
    out = {k: v.astype(np.float32) for k, v in out.items()}
    out["co2"] = co2.astype(np.float32)
    return out


# -- the hidden relation (synthetic/truth_design.py) ----------------------------------------
def make_truth(seed: int, design: "str | TruthDesign" = "random"):
    """The hidden relation of ``design`` (a shipped name such as "structured", a YAML file,
    "random-structured", or a :class:`TruthDesign`) drawn for ``seed``."""
    d = design if isinstance(design, TruthDesign) else load_design(design, seed, "truth design")
    return build_truth(d, seed)


# -- running DALEC --------------------------------------------------------------------------
#: DALEC outputs that :func:`run_dalec` returns (what the observations are made from).
KEPT_OUTPUTS = ("lai", "gpp", "ET", "SIF", "nee", "nbe", "total_fire_combust", "next_labile_pool",
         "next_foliar_pool", "next_root_pool", "next_wood_pool", "next_som_pool",
         "next_water_pool", "respiration_auto", "respiration_hetero_litter",
         "respiration_hetero_som")


def run_dalec(forcing: np.ndarray, params: np.ndarray, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Run DALEC (differland_dist.model.simulate) on (P, T, 17) forcing and (P, 40) physical
    parameters, ``chunk`` pixels at a time (the last chunk padded: one compilation).
    Returns the outputs in ``KEPT_OUTPUTS`` as (P, T) float32."""
    P, T, _ = forcing.shape
    n_proc, n_ph = len(PROCESS_PARAMETERS), len(PHENOLOGY_PARAMETERS)
    chunk = max(1, min(chunk, P))
    out = {k: np.empty((P, T), np.float32) for k in KEPT_OUTPUTS}
    idx = [OUTPUT_INDEX[k] for k in KEPT_OUTPUTS]
    for s in range(0, P, chunk):
        e = min(s + chunk, P)
        sel = np.r_[np.arange(s, e), np.full(chunk - (e - s), s, dtype=np.int64)]
        p = params[sel].astype(np.float32)
        _, y = simulate(forcing[sel], p[:, :n_proc], p[:, n_proc:n_proc + n_ph],
                        p[:, n_proc + n_ph:])
        y = np.asarray(y)[: e - s]
        for k, i in zip(KEPT_OUTPUTS, idx):
            out[k][s:e] = y[:, :, i]
    return out


# -- observations ---------------------------------------------------------------------------
def _patch_mean(x: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Mean over the pixels of each patch, broadcast back to the pixels (axis 0)."""
    n = np.bincount(patch).astype(np.float64)
    s = np.zeros((n.size,) + x.shape[1:], np.float64)
    np.add.at(s, patch, x.astype(np.float64))
    return (s / n.reshape((-1,) + (1,) * (x.ndim - 1)))[patch]


def _annual_mean(x: np.ndarray, year_index: np.ndarray) -> np.ndarray:
    """(P, T) -> (P, T): each month replaced by its calendar year's mean."""
    out = np.empty_like(x)
    for y in np.unique(year_index):
        m = year_index == y
        out[:, m] = x[:, m].mean(axis=1, keepdims=True)
    return out


def make_observations(sim: dict[str, np.ndarray], forcing: dict[str, np.ndarray],
                      grid: Grid, axis: dict[str, np.ndarray], seed: int
                      ) -> dict[str, tuple[np.ndarray, np.ndarray, str, str]]:
    """Observation products: name -> (value, weight, level, description); gaps NaN / 0."""
    P, T = sim["lai"].shape
    noise = _rng(seed, _RNG_NOISE)
    cover = _rng(seed, _RNG_COVER)
    dark = forcing["swrad"] < 3.0  # optical sensors see nothing in the polar night
    obs = {}

    def masked(v, observed):
        v = np.where(observed, v, np.nan).astype(np.float32)
        return v, observed.astype(np.float32)

    def gaps(p):
        return cover.uniform(size=(P, T)) >= p

    sif = sim["SIF"] + noise.normal(0.0, 0.05, (P, T)) + 0.08 * sim["SIF"] * noise.normal(size=(P, T))
    obs["sif"] = (*masked(sif, gaps(0.05) & ~dark), "pixel",
                  "model SIF + noise (0.05 + 8 %); 5 % random gaps, none in the polar night")
    lai = np.maximum(sim["lai"] * (1 + 0.1 * noise.normal(size=(P, T)))
                     + noise.normal(0.0, 0.05, (P, T)), 0.0)
    obs["lai"] = (*masked(lai, gaps(0.05) & ~dark), "pixel",
                  "model LAI + noise (0.05 + 10 %); 5 % random gaps, none in the polar night")
    et = sim["ET"] * (1 + 0.1 * noise.normal(size=(P, T))) + noise.normal(0.0, 0.1, (P, T))
    obs["et_gleam"] = (*masked(et, np.ones((P, T), bool)), "pixel",
                       "model ET + noise (0.1 mm/d + 10 %), every month")
    # patch level: one value per patch and month, broadcast to its pixels
    n_patch = int(grid.patch.max()) + 1
    nbe = _patch_mean(sim["nbe"], grid.patch) + noise.normal(0.0, 0.2, (n_patch, T))[grid.patch]
    obs["nbe"] = (*masked(nbe, np.ones((P, T), bool)), "patch",
                  "patch-mean model NBE + patch noise (0.2 gC m-2 d-1), every month")
    fire_mean = _patch_mean(sim["total_fire_combust"], grid.patch)
    fire = np.maximum(fire_mean * np.exp(0.2 * noise.normal(size=(n_patch, T)))[grid.patch], 0.0)
    obs["fire"] = (*masked(fire, np.ones((P, T), bool)), "patch",
                   "patch-mean model fire emissions x lognormal noise (20 %), every month")
    water = _patch_mean(sim["next_water_pool"], grid.patch)
    month_seen = cover.uniform(size=T) >= 0.1  # GRACE-like: whole months missing
    anomaly = water - water[:, month_seen].mean(axis=1, keepdims=True) if month_seen.any() else water
    ewt = anomaly + noise.normal(0.0, 8.0, (n_patch, T))[grid.patch]
    obs["ewt"] = (*masked(ewt, np.broadcast_to(month_seen, (P, T))), "patch",
                  "patch-mean water pool minus its mean over observed months + noise (8 mm); "
                  "10 % of months missing")
    biomass = (sim["next_labile_pool"] + sim["next_foliar_pool"] + sim["next_wood_pool"]
               + sim["next_root_pool"])
    year_index = axis["year"] - axis["year"][0]
    n_years = int(year_index.max()) + 1
    bio_ann = _annual_mean(biomass, year_index)
    bio_noise = np.exp(0.1 * noise.normal(size=(P, n_years)))[:, year_index]
    year_seen = (cover.uniform(size=(P, n_years)) < 0.6)[:, year_index]
    obs["biomass"] = (*masked(bio_ann * bio_noise, year_seen), "pixel",
                      "annual mean of live biomass (labile+foliar+wood+root) x lognormal noise "
                      "(10 %), all 12 months of a year; 60 % of pixel-years observed")
    som = sim["next_som_pool"].mean(axis=1) * np.exp(0.15 * noise.normal(size=P))
    obs["som"] = (*masked(som, np.ones(P, bool)), "pixel",
                  "time-mean soil organic carbon x lognormal noise (15 %), static")
    # towers: a few percent of pixels, each running for a few consecutive years
    n_tower = max(1, int(round(0.03 * P)))
    towers = np.sort(cover.choice(P, size=n_tower, replace=False))
    running = np.zeros((P, T), bool)
    for p in towers:
        length = int(cover.integers(min(24, T), T + 1))
        start = int(cover.integers(0, T - length + 1))
        running[p, start:start + length] = True
    running &= gaps(0.05)
    reco = sim["respiration_auto"] + sim["respiration_hetero_litter"] + sim["respiration_hetero_som"]
    for name, v, sd in (("gpp_flux", sim["gpp"], 0.3), ("reco_flux", reco, 0.3),
                        ("et_flux", sim["ET"], 0.2)):
        obs[name] = (*masked(v + noise.normal(0.0, sd, (P, T)), running), "pixel",
                     f"model flux + noise ({sd}) at {n_tower} tower pixel(s) "
                     f"({100 * n_tower / P:.1f} %), a few years each")
    # the truth can stray outside a product's plausible range at a few pixel-steps (a rare
    # parameter combination): those become gaps, so every store passes validation
    for product, (value, weight, _, _) in obs.items():
        st = schema.STREAMS[schema.STREAM_INDEX[product]]
        bad = np.isfinite(value) & ((value < st.lo) | (value > st.hi))
        if bad.any():
            log.warning("obs_%s: %d value(s) outside [%g, %g] %s made gaps", product,
                        int(bad.sum()), st.lo, st.hi, st.units)
            value[bad], weight[bad] = np.nan, 0.0
    return obs


# -- the whole Earth ------------------------------------------------------------------------
def _var(name: str, dims, data, extra: dict | None = None) -> xr.Variable:
    spec = {v.name: v for v in schema.COORDS + schema.FORCING + schema.PREDICTORS}[name]
    return xr.Variable(dims, np.asarray(data, dtype=spec.dtype),
                       {"units": spec.units, "long_name": spec.long_name, **(extra or {})})


def make_synthetic(resolution: float = DEFAULT_RESOLUTION, start: int = DEFAULT_START,
                   years: int = DEFAULT_YEARS, seed: int = 0, test_fraction: float = 0.1,
                   max_patch_size: int = 320, dev_fraction: float = 0.1,
                   truth: "str | TruthDesign" = "random",
                   pft_climate_coupling: float = PFT_CLIMATE_COUPLING) -> xr.Dataset:
    """The synthetic Earth as an in-memory Dataset following the store schema.

    Args:
      resolution: grid spacing in degrees (a divisor of 180 on the 1/120 deg mask grid).
      start, years: the monthly period, January of ``start`` on.
      seed: seeds every random draw.
      test_fraction, dev_fraction: fractions of patches in the test and dev splits (by
        patch; see :mod:`differland_dist.data.splits`); the rest is train.
      max_patch_size: largest patch allowed, in pixels. The store's ``max_patch_size`` (its
        pixel chunk) is the largest patch the tiling can make: min(this, tile cells).
      truth: the hidden relation's design: a shipped name (configs/truths: "random",
        "structured"), a design YAML file, "random-structured" (drawn from ``seed``) or a
        :class:`TruthDesign` (synthetic/truth_design.py).
      pft_climate_coupling: how strongly vegetation cover follows climate, in [0, 1]
        (:func:`make_predictors`).
    """
    # grid-independent: bad designs and settings fail first
    spec = truth if isinstance(truth, TruthDesign) else load_design(truth, seed)
    coupling = check_coupling(pft_climate_coupling)
    # a shipped design is recorded by its name (stores as before); others carry their YAML
    shipped = isinstance(truth, str) and truth in shipped_designs()
    truth = build_truth(spec, seed)
    if years < 1:
        raise DifferlandError(f"years must be >= 1, got {years}")
    splits.check_fractions(dev_fraction, test_fraction)
    t0 = _time.perf_counter()
    grid = make_grid(resolution, max_patch_size)
    P = grid.lat.size
    axis = monthly_axis(start, years)
    T = axis["time"].size
    log.info("synthetic Earth: %d land pixels at %g deg, %d patches (tiles of %dx%d cells), "
             "%d months from %d", P, resolution, int(grid.patch.max()) + 1, *grid.tile, T, start)
    pred = make_predictors(grid.lat, grid.lon, seed, coupling)
    frc = make_forcing(grid.lat, grid.lon, pred, axis, seed)
    feats = np.stack([pred[k] for k in TRUTH_FEATURES], axis=1)
    x = apply_truth(truth, feats, grid.lat)
    lo, hi = all_bounds()
    params = to_bounded(x, lo, hi)
    forcing = assemble_forcing({**frc, **axis, "lat": grid.lat, "MAT": pred["MAT"],
                                "MAP": pred["MAP"]})
    log.info("predictors and forcing ready (%.1f s); running DALEC", _time.perf_counter() - t0)
    sim = run_dalec(forcing, params)
    log.info("DALEC done (%.1f s); making observations", _time.perf_counter() - t0)
    obs = make_observations(sim, frc, grid, axis, seed)

    split_patch = splits.assign(int(grid.patch.max()) + 1, dev_fraction, test_fraction,
                                _rng(seed, _RNG_SPLIT))

    PT = ("pixel", "time")
    data = {
        "patch": _var("patch", "pixel", grid.patch),
        "split": _var("split", "pixel", split_patch[grid.patch]),
        "doy": _var("doy", "time", axis["doy"]),
        "delta_t": _var("delta_t", "time", axis["delta_t"]),
        "co2": _var("co2", "time", frc["co2"]),
    }
    for k in ("t_min", "t_max", "swrad", "vpd", "precip", "burned_area"):
        data[k] = _var(k, PT, frc[k])
    for v in schema.PREDICTORS:
        data[v.name] = _var(v.name, "pixel", pred[v.name])
    for product, (value, weight, level, how) in obs.items():
        st = schema.STREAMS[schema.STREAM_INDEX[product]]
        dims = PT if value.ndim == 2 else ("pixel",)
        data[schema.obs_value_name(product)] = xr.Variable(dims, value, {
            "units": st.units, "long_name": f"synthetic {st.name} observations", "stream": st.name,
            "level": level, "description": how})
        data[schema.obs_weight_name(product)] = xr.Variable(dims, weight, {
            "units": "1", "long_name": f"weight of obs_{product} (0 = missing)"})
    pr = ("pixel", "param")
    data["true_params"] = xr.Variable(pr, params.astype(np.float32), {
        "units": "see param_units", "long_name": "true physical DALEC parameters, phenology "
        "dates and initial pools (init_*) behind the synthetic observations"})
    data["true_x"] = xr.Variable(pr, x.astype(np.float32), {
        "units": "1", "long_name": "unbounded values of true_params: lo * (hi/lo) ** "
        "(atan(x)/pi + 0.5)"})
    th = ("truth_feature", "truth_hidden")
    data.update({
        "truth_centre": xr.Variable("truth_feature", truth.centre, {"units": "as the feature"}),
        "truth_scale": xr.Variable("truth_feature", truth.scale, {"units": "as the feature"}),
        "truth_w1": xr.Variable(th, truth.w1, {"units": "1"}),
        "truth_b1": xr.Variable("truth_hidden", truth.b1, {"units": "1"}),
        "truth_w2": xr.Variable(("truth_hidden", "param"), truth.w2, {"units": "1"}),
        "truth_b2_north": xr.Variable("param", truth.b2, {"units": "1"}),
        "truth_b2_south": xr.Variable("param", truth.b2_south, {"units": "1"}),
    })
    coords = {
        "time": _var("time", "time", axis["time"]),
        "lat": _var("lat", "pixel", grid.lat),
        "lon": _var("lon", "pixel", grid.lon),
        "row": _var("row", "pixel", grid.row),
        "col": _var("col", "pixel", grid.col),
        # object arrays: stored as zarr's variable-length "string" data type
        "param": xr.Variable("param", np.array(PARAM_NAMES_ALL, dtype=object)),
        "param_units": xr.Variable("param", np.array(PARAM_UNITS_ALL, dtype=object)),
        "truth_feature": xr.Variable("truth_feature", np.array(TRUTH_FEATURES, dtype=object)),
    }
    attrs = {
        "differland_store_version": schema.STORE_VERSION,
        "title": f"DifferLand synthetic Earth ({resolution:g} deg, {start}-{start + years - 1}, "
                 f"seed {seed})",
        "source": "synthetic",
        "steps_per_year": 12,
        # the largest patch the tiling allows: pixel chunks no bigger than a patch needs
        "max_patch_size": int(min(max_patch_size, grid.tile[0] * grid.tile[1])),
        "grid_resolution_deg": float(resolution),
        "grid_shape": [int(n) for n in grid.shape],
        "grid_origin": "row 0 at 90 N, column 0 at 180 W; centres at +-(i + 0.5) * resolution",
        "patch_tile_cells": [int(n) for n in grid.tile],
        "land_mask": "GLOBE 1 km land-sea mask (global-land-mask package), >= 50 % land, "
                     "north of 60 S",
        "synth_seed": int(seed),
        "synth_start_year": int(start),
        "synth_years": int(years),
        "truth_design": spec.name,
        **({} if shipped else {"truth_design_yaml": spec.to_yaml()}),
        # absent: 1, the geography of the stores made before the setting existed
        **({} if coupling == PFT_CLIMATE_COUPLING else {"synth_pft_climate_coupling": coupling}),
        "test_fraction": float(test_fraction),
        "dev_fraction": float(dev_fraction),
        splits.CONVENTION_ATTR: splits.CONVENTION,
        "truth": "true_x = truth_b2_{north|south} + tanh(((F - truth_centre) / truth_scale) @ "
                 "truth_w1 + truth_b1) @ truth_w2, F = the truth_feature predictors; "
                 "true_params = bounded(true_x)",
    }
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    log.info("synthetic Earth built in %.1f s", _time.perf_counter() - t0)
    return ds


def synth_to_store(url: str, resolution: float = DEFAULT_RESOLUTION, start: int = DEFAULT_START,
                   years: int = DEFAULT_YEARS, seed: int = 0, test_fraction: float = 0.1,
                   max_patch_size: int = 320, storage_options: dict | None = None,
                   overwrite: bool = False, dev_fraction: float = 0.1,
                   truth: "str | TruthDesign" = "random",
                   pft_climate_coupling: float = PFT_CLIMATE_COUPLING) -> xr.Dataset:
    """Make the synthetic Earth and write it to ``url`` (atomically: complete flag last).
    Returns the in-memory Dataset."""
    spec = truth if isinstance(truth, TruthDesign) else load_design(truth, seed)  # bad designs fail first
    check_coupling(pft_climate_coupling)
    check_target(url, storage_options, overwrite)  # fail before minutes of work, not after
    ds = make_synthetic(resolution=resolution, start=start, years=years, seed=seed,
                        test_fraction=test_fraction, max_patch_size=max_patch_size,
                        dev_fraction=dev_fraction,
                        truth=truth if isinstance(truth, str) and truth in shipped_designs() else spec,
                        pft_climate_coupling=pft_climate_coupling)
    write_store(ds, url, storage_options=storage_options, overwrite=overwrite)
    return ds
