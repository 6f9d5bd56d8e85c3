"""Stores and inference outputs as xarray, and their gridded view, for notebooks.

Both open lazily (values are read when indexed) with the same pixel layout:

* dimension ``pixel`` with an index coordinate (the pixel's position in the store, so a
  subset of a store and the same subset of its inference output line up with ``.sel``), and
  per-pixel coordinates ``pixel_lat``, ``pixel_lon`` (degrees), ``row``, ``col``, ``patch``
  and ``split`` (0 train, 1 dev, 2 test: :mod:`differland_dist.data.splits`);
* dimension ``time`` decoded to datetimes;
* for gridded stores, dimensions ``lat`` and ``lon``: the grid's cell centres (row 0 first),
  which :func:`gridded` maps pixels onto.

The store's per-pixel ``lat`` / ``lon`` variables are therefore named ``pixel_lat`` /
``pixel_lon`` here, as in the inference output (``lat`` / ``lon`` are the grid).
"""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr
import zarr

from differland_dist.data.store import PixelStore, quiet_zarr, zarr_store
from differland_dist.storage.location import Location
from differland_dist.data.validate import check_store
from differland_dist.errors import DifferlandError
from differland_dist.storage.location import Location, as_location
from differland_dist.vocabulary.grid import store_grid

log = logging.getLogger(__name__)

_PIXEL_COORDS = ("pixel_lat", "pixel_lon", "row", "col", "patch", "split")


def open_store(where: str | Location, *, validate: bool = False) -> xr.Dataset:
    """A pixel store as a lazy :class:`xarray.Dataset` (layout: see the module docstring).

    Args:
      where: local path, ``gs://``, ``s3://`` ... URL, or a :class:`Location` (URL plus
        fsspec options such as credentials).
      validate: also run the full validation of ``differland validate`` (reads every value;
        DataValidationError listing every problem). Without it only completeness is checked.
    """
    loc = as_location(where)
    url = loc.url
    store = PixelStore(loc)
    if not store.attrs.get("complete", False):
        raise DifferlandError(f"{url}: the store is not complete (attrs.complete is not true): "
                              "its writer was interrupted; write it again")
    if validate:
        check_store(store)
    with quiet_zarr():
        ds = xr.open_dataset(zarr_store(loc), engine="zarr", chunks=None,
                             zarr_format=3, decode_timedelta=False,
                             consolidated="consolidated_metadata" in store.root_meta)
    ds = ds.rename({k: f"pixel_{k}" for k in ("lat", "lon") if k in ds.variables})
    ds = ds.set_coords([c for c in _PIXEL_COORDS if c in ds.variables])
    ds = ds.assign_coords(pixel=np.arange(ds.sizes["pixel"], dtype=np.int64))
    ds["pixel"].attrs.update({"long_name": "pixel index in the store", "units": "1"})
    grid = store_grid(store)
    if grid is not None:
        ds = ds.assign_coords(
            lat=xr.Variable("lat", grid.lat, {"units": "degrees_north", "standard_name": "latitude",
                                              "long_name": "grid cell centre latitude"}),
            lon=xr.Variable("lon", grid.lon, {"units": "degrees_east", "standard_name": "longitude",
                                              "long_name": "grid cell centre longitude"}))
    return ds


def open_output(where: str | Location) -> xr.Dataset:
    """An inference output (``differland infer``; a URL or a :class:`Location`) as a lazy
    Dataset: ``param_<name>`` (pixel), ``map_<name>`` (lat, lon), the series (pixel, time);
    layout: see the module docstring and docs/inference.md. A partial output opens with a
    warning (missing chunks read as NaN)."""
    # imported here: inference/ and experiment/ load JAX; the notebook surface (resolved on first
    # use, differland_dist/__init__.py) loads it only when a function needs it
    from differland_dist.inference.output import read_attrs
    from differland_dist.inference.export import open_output_dataset

    loc = as_location(where)
    url = loc.url
    attrs = read_attrs(loc)
    if attrs is None:
        raise DifferlandError(f"{url}: no inference output there (no zarr group); make one with "
                              "`differland infer` or differland_dist.run_inference")
    if not attrs.get("complete"):
        log.warning("%s is a partial inference output: pixels of unfinished chunks are NaN; run "
                    "`differland infer` again to finish it", url)
    ds = open_output_dataset(loc)
    ds = ds.set_coords([c for c in _PIXEL_COORDS if c in ds.data_vars])
    return _with_pixel_index(ds)


def _with_pixel_index(ds: xr.Dataset) -> xr.Dataset:
    """The pixel dimension gets its store index as a coordinate (int32: CF 1.8 has no int64)."""
    ds = ds.assign_coords(pixel=np.arange(ds.sizes["pixel"], dtype=np.int32))
    ds["pixel"].attrs.update({"long_name": "pixel index in the store", "units": "1"})
    return ds


def open_ensemble(experiment_dir: str | Location) -> xr.Dataset:
    """An experiment's ``ensemble.zarr`` (``differland experiment``; the experiment directory
    as a URL or a :class:`Location`) as a lazy Dataset:
    per ``predictor_set`` the members' mean of the 40 ``param_<name>`` (pixel), the ensemble
    series (pixel, time) and ``map_<name>`` (lat, lon), their standard deviation
    ``<name>_sd`` and quantiles ``<name>_quantile`` (numeric ``quantile`` 0.05, 0.5, 0.95); pixels carry
    ``row``/``col``, so :func:`gridded` turns a series into a (time, lat, lon) cube."""
    # imported here: inference/ and experiment/ load JAX; the notebook surface (resolved on first
    # use, differland_dist/__init__.py) loads it only when a function needs it
    from differland_dist.experiment.ensemble import ENSEMBLE

    root = as_location(experiment_dir)
    ens = root.join(ENSEMBLE)
    try:
        group = zarr.open_group(zarr_store(ens), mode="r", zarr_format=3)
    except FileNotFoundError:
        raise DifferlandError(f"{root.url}: no {ENSEMBLE}; run `differland experiment` "
                              "(or --ensemble-only after training)") from None
    if not group.attrs.get("complete"):
        raise DifferlandError(f"{ens.url}: not complete; rerun `differland experiment --resume`")
    ds = xr.open_zarr(zarr_store(ens), consolidated=True, zarr_format=3)
    ds = ds.set_coords([c for c in _PIXEL_COORDS if c in ds.data_vars])
    return _with_pixel_index(ds)


def _fit_axis(index: np.ndarray, position: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Cell-centre coordinates of grid indices lo..hi from the pixels' (index, position):
    a least-squares line (exact on a regular grid), float32 like the stores' grids."""
    index = np.asarray(index, np.float64)
    position = np.asarray(position, np.float64)
    if np.ptp(index) == 0:  # one row (or column): the slope is not needed
        return np.full(hi - lo + 1, position.mean(), np.float32)
    slope, intercept = np.polyfit(index, position, 1)
    return (intercept + slope * np.arange(lo, hi + 1)).astype(np.float32)


def _grid_of(obj, grid) -> tuple[xr.DataArray, xr.DataArray, int, int]:
    """(lat coordinate, lon coordinate, row offset, col offset) of the target grid."""
    src = grid if grid is not None else obj
    if isinstance(src, (xr.Dataset, xr.DataArray)) and "lat" in src.dims and "lon" in src.dims \
            and "lat" in src.coords and "lon" in src.coords:
        return src["lat"], src["lon"], 0, 0
    if grid is not None:
        raise DifferlandError("grid: expected a Dataset with 'lat' and 'lon' dimensions (a store "
                              "or output opened with differland_dist.open_store / open_output)")
    row, col = np.asarray(obj["row"].values), np.asarray(obj["col"].values)
    missing = [c for c in ("pixel_lat", "pixel_lon") if c not in obj.coords]
    if missing:
        raise DifferlandError(f"gridded: the pixels lack coordinate(s) {missing}; open the data "
                              "with differland_dist.open_store / open_output, or pass grid=")
    r0, r1, c0, c1 = int(row.min()), int(row.max()), int(col.min()), int(col.max())
    lat = _fit_axis(row, obj["pixel_lat"].values, r0, r1)
    lon = _fit_axis(col, obj["pixel_lon"].values, c0, c1)
    return (xr.DataArray(lat, dims="lat", attrs={"units": "degrees_north", "standard_name": "latitude"}),
            xr.DataArray(lon, dims="lon", attrs={"units": "degrees_east", "standard_name": "longitude"}),
            r0, c0)


def _grid_array(da: xr.DataArray, lat, lon, r0: int, c0: int, row, col) -> xr.DataArray:
    rest = [d for d in da.dims if d != "pixel"]
    values = da.transpose(*rest, "pixel").values
    dtype = np.result_type(values.dtype, np.float32)
    out = np.full(values.shape[:-1] + (lat.size, lon.size), np.nan, dtype)
    out[..., row - r0, col - c0] = values
    coords = {k: v.variable for k, v in da.coords.items() if "pixel" not in v.dims}
    coords.update(lat=lat.variable, lon=lon.variable)
    return xr.DataArray(out, dims=(*rest, "lat", "lon"), coords=coords, name=da.name, attrs=da.attrs)


def gridded(obj: xr.DataArray | xr.Dataset, grid: xr.Dataset | None = None):
    """Map per-pixel values onto the regular grid: (..., pixel) -> (..., lat, lon), NaN where
    there is no pixel (e.g. a (pixel, time) series -> a (time, lat, lon) cube).

    Args:
      obj: a DataArray or Dataset with a ``pixel`` dimension and ``row``, ``col`` coordinates
        (from :func:`open_store`, :func:`open_output` or a :class:`TrainedModel` result, or a
        subset of them). Dataset variables without ``pixel`` are left out. The values are
        read: select variables and times first (the cube is lat x lon x the other dims).
      grid: a Dataset with ``lat``/``lon`` dimensions (the opened store or output) to map
        onto. Default: ``obj``'s own grid if it has one (a Dataset), else the smallest box of
        rows and columns holding the pixels, with cell centres fitted from ``pixel_lat`` /
        ``pixel_lon``.
    """
    if not isinstance(obj, (xr.DataArray, xr.Dataset)) or "pixel" not in obj.dims:
        raise DifferlandError("gridded: expected an xarray DataArray or Dataset with a 'pixel' "
                              "dimension")
    missing = [c for c in ("row", "col") if c not in obj.coords]
    if missing:
        raise DifferlandError(f"gridded: the pixels lack coordinate(s) {missing} (site stores "
                              "have no grid)")
    lat, lon, r0, c0 = _grid_of(obj, grid)
    row = np.asarray(obj["row"].values, np.int64)
    col = np.asarray(obj["col"].values, np.int64)
    if row.size and (row.min() - r0 < 0 or col.min() - c0 < 0 or row.max() - r0 >= lat.size
                     or col.max() - c0 >= lon.size):
        raise DifferlandError(f"gridded: pixel rows/cols fall outside the {lat.size} x {lon.size} grid")
    if isinstance(obj, xr.DataArray):
        return _grid_array(obj, lat, lon, r0, c0, row, col)
    data = {n: _grid_array(v, lat, lon, r0, c0, row, col) for n, v in obj.data_vars.items()
            if "pixel" in v.dims}
    return xr.Dataset(data, attrs=obj.attrs)
