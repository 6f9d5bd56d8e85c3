"""Import CF (time, lat, lon) datasets (ERA5, MODIS LAI, FLUXCOM, soil maps ... as netCDF or
zarr) as a pixel store, described by a small YAML mapping file (``differland import-cube``).

The mapping (paths relative to the mapping file)::

    grid: {resolution_deg: 0.5, lat: [30, 40], lon: [-10, 0]}   # box edges, degrees
    time: {start_year: 2001, years: 2}                            # monthly steps
    max_patch_size: 64          # patches: rectangular tiles of at most this many land cells
    split: {dev_fraction: 0.1, test_fraction: 0.1, seed: 0}       # drawn by patch
    method: mean                # or nearest (default mean)
    co2: {value: 380}           # or {file: co2.nc, variable: co2} along time
    variables:                  # store variable -> its source
      t_min: {file: era5.nc, variable: mn2t}
      MAT: {file: clim.nc, variable: tas_mean}
      burned_area: {value: 0}
    observations:               # product -> source (stream: the product's, or give one)
      lai: {file: modis.nc, variable: LAI, uncertainty: LAI_sd}

Every source variable needs a ``units`` attribute (converted with ``cf_units``; see
:mod:`.units_cf`). Sources are (time, lat, lon), (lat, lon) or, for CO2, (time,); coordinates
are found by their CF ``standard_name``/``axis`` or the names lat/latitude, lon/longitude,
time; longitudes may run 0..360. Regridding onto the store's cells: ``mean`` is the
cos(latitude)-weighted mean of the source cells whose centres lie in the target cell (NaN
ignored), falling back to the nearest source cell where none does (a coarser source);
``nearest`` takes the nearest source cell. Monthly steps: the mean of the source steps dated
within the month (a month without one is an error). Static variables given along time are
averaged over it. Land pixels are the cells where every forcing and required predictor is
finite. Observations: NaN = gap (weight 0); with ``uncertainty`` weights 1/unc^2 normalised to
mean 1 over the observed values, else 1.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr
import yaml

from differland_dist.data import schema, splits
from differland_dist.data.importers import base_attrs, obs_variables, schema_var
from differland_dist.data.importers.units_cf import conversion
from differland_dist.data.store import check_target, write_store
from differland_dist.storage.location import Location
from differland_dist.errors import DataValidationError, DifferlandError
from differland_dist.data.tiling import monthly_axis, patch_tile

log = logging.getLogger(__name__)

METHODS = ("mean", "nearest")
#: Forcing the mapping must give per pixel (CO2 is per step; burned_area may be a constant).
PIXEL_FORCING = ("t_min", "t_max", "swrad", "vpd", "precip", "burned_area")
REQUIRED_PREDICTORS = tuple(v.name for v in schema.PREDICTORS if v.required)


@dataclass(frozen=True)
class Grid:
    """The target grid: cell centres (north to south, west to east) and the resolution."""

    lat: np.ndarray
    lon: np.ndarray
    resolution: float


def _need(d: dict, key: str, where: str):
    if not isinstance(d, dict) or key not in d:
        raise DifferlandError(f"{where}: missing key {key!r}")
    return d[key]


def target_grid(spec: dict, where: str) -> Grid:
    r = float(_need(spec, "resolution_deg", f"{where}: grid"))
    s, n = (float(x) for x in _need(spec, "lat", f"{where}: grid"))
    w, e = (float(x) for x in _need(spec, "lon", f"{where}: grid"))
    if r <= 0 or n <= s or e <= w:
        raise DifferlandError(f"{where}: grid needs resolution_deg > 0, lat [south, north], "
                              f"lon [west, east]; got {spec}")
    n_lat, n_lon = round((n - s) / r), round((e - w) / r)
    return Grid(lat=n - (np.arange(n_lat) + 0.5) * r, lon=w + (np.arange(n_lon) + 0.5) * r,
                resolution=r)


def _coord(ds: xr.Dataset, kind: str, where: str) -> str | None:
    names = {"lat": ("lat", "latitude"), "lon": ("lon", "longitude"), "time": ("time",)}[kind]
    axis = {"lat": "Y", "lon": "X", "time": "T"}[kind]
    std = {"lat": "latitude", "lon": "longitude", "time": "time"}[kind]
    for n, v in ds.coords.items():
        if v.attrs.get("standard_name") == std or v.attrs.get("axis") == axis:
            return str(n)
    for n in ds.coords:
        if str(n).lower() in names:
            return str(n)
    return None


def _open(path: Path, cache: dict) -> xr.Dataset:
    if path not in cache:
        if not path.exists():
            raise DifferlandError(f"{path}: no such file")
        try:
            cache[path] = (xr.open_zarr(path, consolidated=None) if path.suffix == ".zarr"
                           else xr.open_dataset(path))
        except (OSError, ValueError) as e:
            raise DifferlandError(f"{path}: cannot open as netCDF or zarr: {e}") from None
    return cache[path]


def _regrid(values: np.ndarray, src_lat: np.ndarray, src_lon: np.ndarray, grid: Grid,
            method: str) -> np.ndarray:
    """(..., src_lat, src_lon) -> (..., n_lat, n_lon) onto the grid (see the module doc)."""
    src_lon = (np.asarray(src_lon, np.float64) + 180.0) % 360.0 - 180.0
    src_lat = np.asarray(src_lat, np.float64)
    tgt_lon = (grid.lon + 180.0) % 360.0 - 180.0
    iy = np.abs(src_lat[None, :] - grid.lat[:, None]).argmin(1)
    dlon = np.abs((src_lon[None, :] - tgt_lon[:, None] + 180.0) % 360.0 - 180.0)
    ix = dlon.argmin(1)
    nearest = values[..., iy[:, None], ix[None, :]]
    if method == "nearest":
        return nearest
    h = grid.resolution / 2
    in_y = np.abs(src_lat[None, :] - grid.lat[:, None]) <= h   # (n_lat, src_lat)
    in_x = dlon <= h                                           # (n_lon, src_lon)
    w_y = in_y * np.cos(np.deg2rad(src_lat))[None, :]
    finite = np.isfinite(values)
    v0 = np.where(finite, values, 0.0)
    num = np.einsum("ij,...jk,lk->...il", w_y, v0, in_x.astype(np.float64))
    den = np.einsum("ij,...jk,lk->...il", w_y, finite.astype(np.float64), in_x.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = num / den
    none_inside = (in_y.sum(1)[:, None] * in_x.sum(1)[None, :]) == 0
    return np.where(none_inside, nearest, mean)


def _monthly(values: np.ndarray, times: np.ndarray, months: np.ndarray, what: str,
             source: str) -> np.ndarray:
    """(src_time, ...) -> (n_months, ...): the mean of the source steps in each month."""
    src_month = times.astype("datetime64[M]")
    out = []
    for m in months:
        sel = src_month == m
        if not sel.any():
            raise DataValidationError([f"{what}: no step in {m} (the mapping's time axis runs "
                                       f"{months[0]}..{months[-1]}; the source "
                                       f"{src_month.min()}..{src_month.max()})"], source=source)
        with np.errstate(invalid="ignore"):
            out.append(np.nanmean(values[sel], axis=0) if sel.sum() > 1 else values[sel][0])
    return np.stack(out)


class _Reader:
    """Reads mapping entries onto the grid and time axis, converted to store units."""

    def __init__(self, base: Path, grid: Grid, months: np.ndarray, method: str, where: str):
        self.base, self.grid, self.months, self.method, self.where = base, grid, months, method, where
        self.cache: dict = {}
        self.sources: list[str] = []

    def read(self, name: str, entry: dict, store_units: str, temporal: bool) -> np.ndarray:
        """(n_months, n_lat, n_lon) if ``temporal`` else (n_lat, n_lon); a (time,) source
        (CO2) gives (n_months,)."""
        if not isinstance(entry, dict):
            raise DifferlandError(f"{self.where}: {name}: expected {{file, variable}} or {{value}}")
        if "value" in entry:
            shape = ((len(self.months),) if temporal else ()) + (self.grid.lat.size, self.grid.lon.size)
            return np.full(shape, float(entry["value"]))
        path = self.base / str(_need(entry, "file", f"{self.where}: {name}"))
        var = str(_need(entry, "variable", f"{self.where}: {name}"))
        ds = _open(path, self.cache)
        what = f"{path.name}: {var} (for {name})"
        if var not in ds.variables:
            raise DifferlandError(f"{what}: no such variable in {path} (it has "
                                  f"{', '.join(map(str, ds.data_vars))})")
        da = ds[var]
        scale, offset = conversion(da.attrs, store_units, what, str(path))
        self.sources.append(f"{name} <- {path.name}:{var}")
        lat, lon, t = (_coord(ds, k, what) for k in ("lat", "lon", "time"))
        spatial = lat is not None and lon is not None and lat in da.dims and lon in da.dims
        timed = t is not None and t in da.dims
        order = [d for d in (t if timed else None, lat if spatial else None, lon if spatial else None) if d]
        extra = [d for d in da.dims if d not in order]
        if extra:
            raise DataValidationError([f"{what}: dims {da.dims}; expected (time, lat, lon), "
                                       "(lat, lon) or (time,)"], source=str(path))
        x = np.asarray(da.transpose(*order).values, np.float64) * scale + offset
        if timed and temporal:
            x = _monthly(x, np.asarray(ds[t].values).astype("datetime64[ns]"), self.months, what, str(path))
        elif timed:
            with np.errstate(invalid="ignore"):
                x = np.nanmean(x, axis=0)  # a static variable given along time: its mean
        elif temporal and spatial:
            x = np.broadcast_to(x, (len(self.months),) + x.shape)
        if spatial:
            x = _regrid(x, ds[lat].values, ds[lon].values, self.grid, self.method)
        return x


def _tiles(rows: np.ndarray, cols: np.ndarray, n_cols: int, resolution: float,
           max_patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel order and patch ids: rectangular tiles of at most ``max_patch_size`` cells."""
    a, b = patch_tile(resolution, max_patch_size)
    tile = (rows // a) * (-(-n_cols // b)) + cols // b
    order = np.lexsort((cols, rows, tile))
    _, patch = np.unique(tile[order], return_inverse=True)
    return order, patch.astype(np.int32)


def load_mapping(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        m = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise DifferlandError(f"{p}: no such mapping file") from None
    except yaml.YAMLError as e:
        raise DifferlandError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(m, dict):
        raise DifferlandError(f"{p}: expected a mapping with grid, time, variables")
    unknown = sorted(set(m) - {"grid", "time", "max_patch_size", "split", "method", "co2",
                               "variables", "observations", "title"})
    if unknown:
        raise DifferlandError(f"{p}: unknown key(s) {unknown}")
    return m


def _checked_mapping(m: dict, where: str) -> tuple[str, dict, dict]:
    """(regridding method, store variable -> source entry, product -> source entry) of a
    mapping, checked: required variables present, every name a store forcing, predictor or
    stream."""
    method = m.get("method", "mean")
    if method not in METHODS:
        raise DifferlandError(f"{where}: method {method!r}; expected one of {', '.join(METHODS)}")
    variables = dict(_need(m, "variables", where))
    missing = [v for v in (*PIXEL_FORCING, *REQUIRED_PREDICTORS) if v not in variables]
    if missing:
        raise DifferlandError(f"{where}: variables lacks {', '.join(missing)} (forcing "
                              f"{', '.join(PIXEL_FORCING)} and predictors "
                              f"{', '.join(REQUIRED_PREDICTORS)} are required)")
    unknown = [v for v in variables if v not in schema.VARS or v in ("co2", "doy", "delta_t")
               or schema.VARS[v].dims[0] != "pixel" or v in ("lat", "lon", "row", "col", "patch", "split")]
    if unknown:
        raise DifferlandError(f"{where}: variables {unknown} are not store forcing or predictors")
    obs_spec = dict(m.get("observations") or {})
    for product, e in obs_spec.items():
        stream = (e or {}).get("stream", product)
        if stream not in schema.STREAM_INDEX:
            raise DifferlandError(f"{where}: observation {product!r}: stream {stream!r} unknown "
                                  f"(streams: {', '.join(schema.STREAM_NAMES)})")
    return method, variables, obs_spec


def _land_cells(fields: dict[str, np.ndarray], grid: Grid, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the cells where every forcing and required predictor is finite."""
    land = np.ones(grid.lat.shape + grid.lon.shape, bool)
    for n in (*PIXEL_FORCING, *REQUIRED_PREDICTORS):
        x = fields[n]
        land &= np.isfinite(x).all(axis=0) if x.ndim == 3 else np.isfinite(x)
    rows, cols = np.nonzero(land)
    if rows.size == 0:
        raise DataValidationError(["no cell of the grid has every forcing and required predictor "
                                   "finite"], source=where)
    return rows, cols


def _observation_variables(reader: _Reader, obs_spec: dict,
                           at_pixels: Callable[[np.ndarray], np.ndarray]) -> dict[str, xr.Variable]:
    """Every mapped product at the land pixels, weighted 1 (or 1/unc^2 normalised)."""
    data = {}
    for product, e in obs_spec.items():
        stream = e.get("stream", product)
        st = schema.STREAMS[schema.STREAM_INDEX[stream]]
        value = at_pixels(reader.read(f"obs {product}", e, st.units, True))
        if "uncertainty" in e:
            unc = at_pixels(reader.read(f"obs {product} uncertainty",
                                        {**e, "variable": e["uncertainty"]}, st.units, True))
            ok = np.isfinite(value) & np.isfinite(unc) & (unc > 0)
            w = np.where(ok, 1.0 / np.where(ok, unc, 1.0) ** 2, 0.0)
            w = w / w[ok].mean() if ok.any() else w
            wdesc = f"1/{e['uncertainty']}^2 normalised to mean 1 over observed values"
        else:
            w = np.isfinite(value).astype(np.float64)
            wdesc = "1 where observed, 0 at gaps"
        data.update(obs_variables(product, stream, value, w, f"{product} ({e.get('file')}: "
                                  f"{e.get('variable')})", weights=wdesc))
    return data


def import_cube(mapping_path: str | os.PathLike) -> xr.Dataset:
    """Build the store Dataset described by the mapping file (see the module doc)."""
    where = str(mapping_path)
    m = load_mapping(mapping_path)
    grid = target_grid(_need(m, "grid", where), where)
    tspec = _need(m, "time", where)
    axis = monthly_axis(int(_need(tspec, "start_year", f"{where}: time")),
                        int(_need(tspec, "years", f"{where}: time")))
    months = (np.datetime64("2001-01-01") + np.floor(axis["time"]).astype("timedelta64[D]")
              ).astype("datetime64[M]")
    method, variables, obs_spec = _checked_mapping(m, where)
    reader = _Reader(Path(mapping_path).parent, grid, months, method, where)
    fields = {n: reader.read(n, e, schema.VARS[n].units, schema.VARS[n].dims == schema.PT)
              for n, e in variables.items()}
    co2 = reader.read("co2", _need(m, "co2", where), "ppm", True)
    if co2.ndim > 1:
        co2 = np.nanmean(co2.reshape(co2.shape[0], -1), axis=1)
    rows, cols = _land_cells(fields, grid, where)
    order, patch = _tiles(rows, cols, grid.lon.size, grid.resolution, int(m.get("max_patch_size", 64)))
    rows, cols = rows[order], cols[order]
    sp = m.get("split") or {}
    n_patches = int(patch.max()) + 1
    codes = splits.assign(n_patches, float(sp.get("dev_fraction", 0.1)),
                          float(sp.get("test_fraction", 0.1)),
                          np.random.default_rng(int(sp.get("seed", 0))))

    def at_pixels(x: np.ndarray) -> np.ndarray:
        return x[..., rows, cols].T if x.ndim == 3 else x[rows, cols]

    data: dict[str, xr.Variable] = {
        "patch": schema_var("patch", patch), "split": schema_var("split", codes[patch]),
        "doy": schema_var("doy", axis["doy"]), "delta_t": schema_var("delta_t", axis["delta_t"]),
        "co2": schema_var("co2", co2),
        **{n: schema_var(n, at_pixels(x), source=f"import-cube ({method})") for n, x in fields.items()},
        **_observation_variables(reader, obs_spec, at_pixels)}
    coords = {
        "time": schema_var("time", axis["time"]),
        "lat": schema_var("lat", grid.lat[rows]), "lon": schema_var("lon", grid.lon[cols]),
        "row": schema_var("row", rows), "col": schema_var("col", cols),
    }
    attrs = base_attrs(
        title=m.get("title") or f"import-cube: {Path(mapping_path).name}", source="import-cube",
        steps_per_year=12, max_patch_size=int(np.bincount(patch).max()),
        grid_resolution_deg=grid.resolution, grid_shape=[int(grid.lat.size), int(grid.lon.size)],
        regrid_method=method, mapping_file=Path(mapping_path).name, source_variables=reader.sources,
        **{splits.CONVENTION_ATTR: splits.CONVENTION})
    log.info("import-cube: %d land pixels in %d patches, %d months", rows.size, n_patches, len(months))
    return xr.Dataset(data, coords=coords, attrs=attrs)


def cube_to_store(mapping_path: str | os.PathLike, where: Location | str,
                  overwrite: bool = False) -> xr.Dataset:
    """Import and write the store at ``where`` (validated by ``write_store``; complete flag
    last). The target is checked before any source is read."""
    check_target(where, overwrite=overwrite)
    ds = import_cube(mapping_path)
    write_store(ds, where, overwrite=overwrite)
    return ds

