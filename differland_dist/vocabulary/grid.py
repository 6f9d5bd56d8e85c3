"""The geometry of a regular latitude-longitude grid: the one :class:`Grid`, cell edges and
cell areas on the authalic sphere (numpy only)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from differland_dist.errors import DifferlandError

#: Earth radius of the cell areas: the authalic sphere (same surface as WGS84), m.
EARTH_RADIUS_M = 6371007.181


class Grid(NamedTuple):
    """A regular grid: cell-centre coordinates and each pixel's cell."""

    lat: np.ndarray   # (n_lat,) float32, degrees_north (row 0 first)
    lon: np.ndarray   # (n_lon,) float32, degrees_east (column 0 first)
    row: np.ndarray   # (P,) int
    col: np.ndarray   # (P,) int

    @property
    def shape(self) -> tuple[int, int]:
        """(n_lat, n_lon)."""
        return int(self.lat.size), int(self.lon.size)


def fit_grid(lat: np.ndarray, lon: np.ndarray, row: np.ndarray, col: np.ndarray,
             resolution: float, shape=None, source: str = "store") -> Grid | None:
    """The grid of pixels at ``lat``/``lon`` (P,) degrees in cells ``row``/``col`` (P,) of a
    ``resolution``-degree grid; None for no pixels.

    Cell centres are fitted from the pixels (``lat = lat0 - row * r``, ``lon = lon0 + col * r``),
    so the grid's origin need not be 90 N / 180 W; the shape is ``shape`` when given, else the
    pixels' row/column extent. Raises DifferlandError naming ``source`` for pixels outside it.
    """
    r = float(resolution)
    row, col = np.asarray(row, np.int64), np.asarray(col, np.int64)
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    if row.size == 0:
        return None
    lat0 = float(np.median(lat + row * r))
    lon0 = float(np.median(lon - col * r))
    n_lat, n_lon = (int(shape[0]), int(shape[1])) if shape else (int(row.max()) + 1, int(col.max()) + 1)
    if row.max() >= n_lat or col.max() >= n_lon or row.min() < 0 or col.min() < 0:
        raise DifferlandError(f"{source}: pixel rows/cols fall outside grid_shape {shape}")
    return Grid((lat0 - np.arange(n_lat) * r).astype(np.float32),
                (lon0 + np.arange(n_lon) * r).astype(np.float32), row, col)


def store_grid(store) -> Grid | None:
    """The grid of a gridded pixel store (``grid_resolution_deg`` > 0; see :func:`fit_grid`),
    None for point/site stores. ``store``: an opened ``PixelStore`` (its ``attrs``,
    ``array(name)`` and ``url``; the shape is ``attrs["grid_shape"]`` when present)."""
    r = float(store.attrs.get("grid_resolution_deg", 0) or 0)
    if r <= 0:
        return None
    return fit_grid(store.array("lat")[:], store.array("lon")[:], store.array("row")[:],
                    store.array("col")[:], r, store.attrs.get("grid_shape"), store.url)


def to_grid(values: np.ndarray, grid: Grid) -> np.ndarray:
    """(P,) per-pixel values -> (n_lat, n_lon) float32 map, NaN where there is no pixel."""
    out = np.full((grid.lat.size, grid.lon.size), np.nan, np.float32)
    out[grid.row, grid.col] = values
    return out


def cell_bounds(centres: np.ndarray, r: float, lo: float | None = None,
                hi: float | None = None) -> np.ndarray:
    """(n, 2) cell edges ``centre -/+ r/2`` in degrees (clipped to [lo, hi] when given), in
    the order of the centres (a north-to-south latitude axis gives [north, south] rows)."""
    c = np.asarray(centres, np.float64)
    step = -r if c.size > 1 and c[1] < c[0] else r
    b = np.stack([c - step / 2, c + step / 2], axis=1)
    return np.clip(b, lo, hi) if lo is not None else b


def row_areas(lat: np.ndarray, r: float, radius: float = EARTH_RADIUS_M) -> np.ndarray:
    """(n_lat,) area in m2 of one grid cell of each latitude row (all cells of a row are equal):
    ``R^2 * dlon * |sin(lat_north) - sin(lat_south)|`` with ``dlon = r`` in radians and the
    row's edges ``lat -/+ r/2`` clipped to +-90 degrees."""
    b = np.deg2rad(cell_bounds(lat, r, -90.0, 90.0))
    return radius ** 2 * np.deg2rad(r) * np.abs(np.sin(b[:, 1]) - np.sin(b[:, 0]))
