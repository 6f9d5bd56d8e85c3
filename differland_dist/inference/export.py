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
import shutil
import tempfile

import numpy as np
import xarray as xr

from differland_dist.data.store import _quiet_zarr, resolve
from differland_dist.inference import output as out_mod
from differland_dist.errors import DifferlandError

log = logging.getLogger(__name__)

NETCDF_FILES = ("parameters.nc", "maps.nc", "series.nc")
_PIXEL_COORDS = out_mod.PIXEL_COORDS


def open_output_dataset(url: str, storage_options: dict | None = None) -> xr.Dataset:
    """The output as a lazy Dataset (times decoded), without the bookkeeping arrays."""
    from differland_dist.data.store import zarr_store

    with _quiet_zarr():
        ds = xr.open_zarr(zarr_store(url, storage_options), zarr_format=3, consolidated=True)
    return ds.drop_vars([out_mod.DONE, out_mod.WRITTEN_AT], errors="ignore")


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


def split_dataset(ds: xr.Dataset) -> dict[str, xr.Dataset]:
    """file name -> the part of the output it holds, with its coordinates (pure)."""
    params = [v for v in ds.data_vars if v.startswith("param_")]
    maps = [v for v in ds.data_vars if v.startswith("map_")]
    series = [v for v in ds.data_vars if ds[v].dims == ("pixel", "time")]
    extra = [v for v in _PIXEL_COORDS if v in ds.data_vars]  # if not decoded as coordinates
    parts = {"parameters.nc": ds[params + extra], "series.nc": ds[series + extra]}
    if maps:
        parts["maps.nc"] = ds[maps]
    attrs = _nc_attrs(ds.attrs)
    for p in parts.values():
        p.attrs = dict(attrs)
    return parts


def _encoding(ds: xr.Dataset, chunk_pixels: int) -> dict:
    enc = {}
    for name, var in ds.data_vars.items():
        if np.issubdtype(var.dtype, np.floating):
            e = {"zlib": True, "complevel": 1, "_FillValue": np.float32(np.nan)}
            if "pixel" in var.dims:
                e["chunksizes"] = tuple(min(chunk_pixels, n) if d == "pixel" else n
                                        for d, n in zip(var.dims, var.shape))
            enc[name] = e
    return enc


def export_netcdf(url: str, dest: str, storage_options: dict | None = None) -> list[str]:
    """Write the netCDF files of the complete output ``url`` into the directory ``dest``.

    Returns the URLs written."""
    attrs = out_mod.read_attrs(url, storage_options)
    if attrs is None or not attrs.get("complete"):
        raise DifferlandError(f"{url}: not a complete inference output; cannot export netCDF")
    ds = open_output_dataset(url, storage_options)
    C = int(attrs["chunk_pixels"])
    fs, root = resolve(dest, storage_options)
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    fs.makedirs(root, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="differland-nc-") as tmp:
        for name, part in split_dataset(ds).items():
            path = os.path.join(tmp, name)
            part.load().to_netcdf(path, engine="netcdf4", format="NETCDF4",
                                  encoding=_encoding(part, C))
            target = f"{root}/{name}"
            if local:
                part_path = f"{target}.tmp-{os.getpid()}"
                shutil.copyfile(path, part_path)
                os.replace(part_path, target)
            else:
                fs.put_file(path, target)  # object uploads are atomic
            written.append(f"{dest.rstrip('/')}/{name}")
            log.info("wrote %s (%d variables)", written[-1], len(part.data_vars))
    return written
