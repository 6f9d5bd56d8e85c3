"""The geography of the synthetic Earth: land pixels of a regular grid (from a real land-sea
mask) grouped into patches, and the 20 static predictors (vegetation types, climate normals,
terrain, soils) drawn as smooth random fields shaped by latitude.

Land pixels come from the GLOBE 1 km mask shipped by the ``global-land-mask`` package, averaged
to the chosen grid (a cell is land if at least half of it is land; Antarctica, south of 60 S,
is left out).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time as _time
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from differland_dist.data.tiling import patch_tile
from differland_dist.errors import DifferlandError
from differland_dist.synthetic.fields import (
    RNG_GEOGRAPHY, sigmoid, smooth_fields, softmax, sphere_xyz, stream)

log = logging.getLogger(__name__)

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


class LandPixels(NamedTuple):
    """Land pixels of a regular lat-lon grid, in patch order."""

    lat: np.ndarray    # (P,) float32 cell-centre latitude
    lon: np.ndarray    # (P,) float32 cell-centre longitude
    row: np.ndarray    # (P,) int32, 0 = northernmost
    col: np.ndarray    # (P,) int32, 0 = westernmost (180 W)
    patch: np.ndarray  # (P,) int32, sorted
    shape: tuple[int, int]
    tile: tuple[int, int]  # rows x columns of grid cells per patch tile


def make_grid(resolution: float, max_patch_size: int = 320) -> LandPixels:
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
    return LandPixels(lat=(90.0 - (rows + 0.5) * resolution).astype(np.float32),
                lon=(-180.0 + (cols + 0.5) * resolution).astype(np.float32),
                row=rows.astype(np.int32), col=cols.astype(np.int32),
                patch=patch.astype(np.int32), shape=(n_rows, n_cols), tile=(a, b))


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
    rng = stream(seed, RNG_GEOGRAPHY)
    xyz = sphere_xyz(lat, lon)
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
    pft = softmax(1.3 * np.stack(scores, axis=1))
    forest = pft[:, :4].sum(axis=1)
    height = forest * (4.0 + 36.0 * sigmoid((mat - 4.0) / 6.0) * sigmoid((logp - 2.75) / 0.15))
    height = np.clip(height * np.exp(0.2 * f[:, 3]), 0.0, 60.0)
    age = np.clip((20.0 + 160.0 * sigmoid(1.2 * f[:, 4])) * (1.0 - 0.5 * pft[:, 8]), 1.0, 400.0)
    dry = np.clip(1.0 - map_ / 1200.0, 0.0, 1.0)
    tex = softmax(np.stack([0.4 + 0.8 * f[:, 5] + 1.5 * dry, 0.3 + 0.6 * f[:, 6],
                             0.6 * f[:, 7] + 0.8 * (mat > 18) * (1 - dry)], axis=1))
    sand, silt, clay = (100.0 * tex[:, i] for i in range(3))
    gravel = 3.0 + 30.0 * sigmoid(0.8 * f[:, 5] + elev / 1500.0 - 1.5)
    bulk = np.clip(1.55 - 0.45 * tex[:, 2] - 0.2 * (mat < 0) * (1 - dry) + 0.05 * f[:, 6], 0.8, 1.9)
    out = {name: pft[:, j] for j, name in enumerate(_PFT_CLIMATE)}
    out.update(MAT=mat, MAP=map_, elevation=elev, canopy_height=height, forest_age=age,
               BULK_DEN=bulk, SAND=sand, SILT=silt, CLAY=clay, GRAVEL=gravel)
    out = {k: np.asarray(v, np.float32) for k, v in out.items()}
    out["_continentality"] = f[:, 3].astype(np.float32)  # internal: shapes the seasons
    return out
