"""netCDF export of a complete inference output (``differland infer --format netcdf``).

The same variables, values and attributes as the zarr output, in three files:

* ``parameters.nc``: per-pixel parameters ``param_*`` (pixel) with the pixel coordinates;
* ``maps.nc``: gridded parameter maps ``map_*`` (lat, lon) (only for gridded stores);
* ``series.nc``: monthly series (pixel, time) with ``time`` and the pixel coordinates.

Each file is written to a local temporary file, then moved (locally) or uploaded (object
stores) into place, so a reader never sees a partial file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

import numpy as np
import xarray as xr

from differland_dist.data.store import quiet_zarr, zarr_store
from differland_dist.inference.output import DONE, PIXEL_COORDS, WRITTEN_AT, open_output, read_attrs
from differland_dist.vocabulary.grid import cell_bounds
from differland_dist.errors import DifferlandError
from differland_dist.storage.location import Location, as_location
from differland_dist.storage.uploads import upload

log = logging.getLogger(__name__)

NETCDF_FILES = ("parameters.nc", "maps.nc", "series.nc")
_PIXEL_COORDS = PIXEL_COORDS


def open_output_dataset(location: Location | str) -> xr.Dataset:
    """The output as a lazy Dataset (times decoded), without the bookkeeping arrays."""
    location = as_location(location)
    with quiet_zarr():
        ds = xr.open_zarr(zarr_store(location), zarr_format=3, consolidated=True)
    return ds.drop_vars([DONE, WRITTEN_AT], errors="ignore")


def _nc_attrs(attrs: dict) -> dict:
    """Group attributes netCDF can hold: bools as 0/1, lists and dicts as JSON text."""
    out = {}
    for k, v in attrs.items():
        if isinstance(v, bool):
            out[k] = int(v)
        elif isinstance(v, (list, tuple, dict)):
            out[k] = json.dumps(v)
        elif v is None:
            out[k] = ""
        else:
            out[k] = v
    return out


def with_bounds(ds: xr.Dataset) -> xr.Dataset:
    """The output with CF cell bounds (dimension ``nv``): ``time_bnds`` = mid-step time -/+
    half of ``step_days``; ``lat_bnds``/``lon_bnds`` = centres -/+ half the grid resolution
    (latitudes clipped to +-90). Pure; bounds carry no attributes (CF 7.1)."""
    new: dict[str, xr.Variable] = {}
    if "step_days" in ds.variables and np.issubdtype(ds["time"].dtype, np.datetime64):
        half = (np.asarray(ds["step_days"].values, np.float64) * 43200e9).astype("timedelta64[ns]")
        t = ds["time"].values
        new["time_bnds"] = xr.Variable(("time", "nv"), np.stack([t - half, t + half], 1))
    r = float(ds.attrs.get("grid_resolution_deg", 0) or 0)
    if r > 0 and "lat" in ds.dims and "lon" in ds.dims:
        new["lat_bnds"] = xr.Variable(("lat", "nv"), cell_bounds(ds["lat"].values, r, -90.0, 90.0)
                                      .astype(np.float32))
        new["lon_bnds"] = xr.Variable(("lon", "nv"), cell_bounds(ds["lon"].values, r)
                                      .astype(np.float32))
    ds = ds.assign_coords(new)
    for name in new:
        c = name[:-5]
        ds[c].attrs = {**ds[c].attrs, "bounds": name}
    return ds


def split_dataset(ds: xr.Dataset) -> dict[str, xr.Dataset]:
    """file name -> the part of the output it holds, with its coordinates and the bounds of
    those (:func:`with_bounds`) (pure)."""
    ds = with_bounds(ds)
    params = [v for v in ds.data_vars if v.startswith("param_")]
    maps = [v for v in ds.data_vars if v.startswith("map_")]
    series = [v for v in ds.data_vars if ds[v].dims == ("pixel", "time")]
    extra = [v for v in _PIXEL_COORDS if v in ds.data_vars]  # if not decoded as coordinates
    parts = {"parameters.nc": ds[params + extra], "series.nc": ds[series + extra]}
    if maps:
        parts["maps.nc"] = ds[maps]
    attrs = _nc_attrs(ds.attrs)
    for name, p in parts.items():
        # the CF companions a subset drops: bounds of its coordinates (their extra dimension)
        bounds = [str(p[c].attrs["bounds"]) for c in p.coords
                  if "bounds" in p[c].attrs and str(p[c].attrs["bounds"]) in ds.variables]
        if bounds:
            p = parts[name] = p.assign_coords({b: ds[b] for b in bounds})
        p.attrs = dict(attrs)
    return parts


#: Float values read and written per block of a large variable (64 MiB of float32).
BLOCK_VALUES = 16 * 1024 * 1024


def _skeleton_encoding(ds: xr.Dataset, time_attrs: dict) -> dict:
    """Encoding of the small variables: no _FillValue on coordinates and bounds (CF 2.5.1);
    time and its bounds as float64 in the output's own units and calendar."""
    enc: dict = {name: {"_FillValue": None} for name in ds.variables}
    for name in ("time", "time_bnds"):
        if name in ds.variables and np.issubdtype(ds[name].dtype, np.datetime64):
            enc[name].update(units=time_attrs.get("units", "days since 2001-01-01"),
                             calendar=time_attrs.get("calendar", "standard"), dtype="float64")
    return enc


def _block_rows(shape: tuple[int, ...], chunk_pixels: int) -> int:
    """Rows (first axis) per block: whole output chunks, about :data:`BLOCK_VALUES` values."""
    per_row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    rows = max(1, BLOCK_VALUES // max(per_row, 1))
    if shape and shape[0] > chunk_pixels:
        rows = max(chunk_pixels, rows // chunk_pixels * chunk_pixels)
    return max(1, min(rows, shape[0] if shape else 1))


def _write_part(path: str, part: xr.Dataset, group, chunk_pixels: int) -> None:
    """Write one netCDF file in bounded memory: the small variables (coordinates, bounds,
    areas, crs) with xarray, then each large variable created with netCDF4 and filled block
    by block (whole output chunks) straight from the zarr arrays, with their zarr attributes."""
    # imported here: netCDF4 is heavy and only the netCDF export needs it
    import netCDF4

    big = list(part.data_vars)
    skeleton = part.drop_vars(big).copy()
    for v in skeleton.variables.values():  # zarr keeps flags as a JSON list; CF: the variable's type
        if "flag_values" in v.attrs:
            v.attrs = {**v.attrs, "flag_values": np.asarray(v.attrs["flag_values"], v.dtype)}
    with quiet_zarr():
        time_attrs = dict(group["time"].attrs)
    skeleton.load().to_netcdf(path, engine="netcdf4", format="NETCDF4",
                              encoding=_skeleton_encoding(skeleton, time_attrs))
    with netCDF4.Dataset(path, "a") as nc, quiet_zarr():
        for name in big:
            arr = group[name]
            dims = tuple(part[name].dims)
            shape = tuple(int(n) for n in arr.shape)
            chunks = tuple(min(chunk_pixels, n) if d == "pixel" else n for d, n in zip(dims, shape))
            dtype = np.dtype(arr.dtype).newbyteorder("=")
            floating = np.issubdtype(dtype, np.floating)
            var = nc.createVariable(name, dtype, dims, zlib=True, complevel=1,
                                    chunksizes=chunks if all(chunks) else None,
                                    fill_value=np.array(np.nan, dtype) if floating else None)
            var.setncatts({k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                           for k, v in dict(arr.attrs).items() if k != "_FillValue"})
            var.set_auto_mask(False)  # NaN is the fill value: write values as they are
            # HDF5 keeps up to 16 MiB of chunks per variable until the file closes (19 series:
            # ~300 MiB); blocks are written whole, so a cache of one chunk row is enough
            var.set_var_chunk_cache(size=max(1 << 20, 4 * int(np.prod(chunks)) * dtype.itemsize),
                                    nelems=521, preemption=1.0)
            rows = _block_rows(shape, chunk_pixels)
            for a in range(0, shape[0], rows):
                var[a:a + rows] = np.asarray(arr[a:a + rows])


def export_netcdf(source: Location | str, dest: Location | str) -> list[str]:
    """Write the netCDF files of the complete output ``source`` into the directory ``dest``,
    streaming each large variable in blocks of whole output chunks (memory: one block of
    about 64 MiB, not the dataset).

    Returns the URLs written."""
    source, dest = as_location(source), as_location(dest)
    attrs = read_attrs(source)
    if attrs is None or not attrs.get("complete"):
        raise DifferlandError(f"{source.url}: not a complete inference output; cannot export netCDF")
    ds = open_output_dataset(source)
    group = open_output(source)
    C = int(attrs["chunk_pixels"])
    fs, root = dest.fs, dest.path
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    fs.makedirs(root, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="differland-nc-") as tmp:
        for name, part in split_dataset(ds).items():
            target = f"{root}/{name}"
            # local: build beside the target (no second copy), then rename into place
            path = f"{target}.tmp-{os.getpid()}" if local else os.path.join(tmp, name)
            try:
                _write_part(path, part, group, C)
                if local:
                    os.replace(path, target)
                else:
                    upload(fs, [(path, target)], dest.url)  # atomic, verified (uploads.py)
            finally:
                if local and os.path.exists(path):
                    os.remove(path)
            written.append(dest.join(name).url)
            log.info("wrote %s (%d variables)", written[-1], len(part.data_vars))
    return written
