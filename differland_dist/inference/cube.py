"""CF (time, lat, lon) cubes of an inference output or an experiment's ensemble.zarr, the
layout CDO, NCO, ncview and ILAMB read (``differland export``).

A cube file holds, on the store's regular grid:

* ``time`` (days since the output's reference, float64) with ``time_bnds`` (step start, end),
  ``lat``/``lon`` cell centres with ``lat_bnds``/``lon_bnds``, ``crs`` (a sphere,
  ``latitude_longitude``) and ``cell_area`` (m2);
* each series as (time, lat, lon) float32, NaN off land, with ``units``, ``long_name``,
  ``standard_name`` where CF has one, ``cell_methods = "time: mean"`` for fluxes (step means),
  ``grid_mapping = "crs"`` and ``cell_measures = "area: cell_area"``; from an ensemble store the
  members' mean under the series' name, ``<name>_sd`` (their standard deviation) and
  ``<name>_quantile`` (quantile, time, lat, lon) with a numeric ``quantile`` coordinate;
* ``split`` (lat, lon) int8 with ``flag_values``/``flag_meanings`` (train dev test);
* the source's provenance and identity attributes, ``Conventions = "CF-1.8"``.

With ``cmor=True`` the series listed in :data:`differland_dist.inference.cmor.CMOR_TABLE` are
renamed, sign-flipped where CMOR's convention differs and converted with ``cf_units``.

Memory: one variable's cube at a time (time x lat x lon float32), never the whole output.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Sequence

import numpy as np
import xarray as xr

from differland_dist.common import provenance
from differland_dist.data.store import quiet_zarr, zarr_store
from differland_dist.errors import DifferlandError
from differland_dist.storage.location import Location, as_location
from differland_dist.inference.cmor import CMOR_TABLE, cmor_factor
from differland_dist.inference.output import DONE, WRITTEN_AT
from differland_dist.vocabulary.grid import EARTH_RADIUS_M, row_areas
from differland_dist.vocabulary.series import SERIES
from differland_dist.inference.export import with_bounds

log = logging.getLogger(__name__)

FORMATS = {".nc": "netcdf", ".zarr": "zarr"}
#: The split's flags (``data.splits``: 0 train, 1 dev, 2 test).
SPLIT_FLAGS = {"flag_values": [0, 1, 2], "flag_meanings": "train dev test"}
#: Attributes of a source series that describe the per-pixel layout, not the cube's.
_PIXEL_ONLY = ("coordinates", "cell_measures", "_FillValue")


def open_source(location: Location | str) -> tuple[xr.Dataset, str]:
    """The output at ``location`` as a lazy Dataset and its kind: "inference" (an inference
    output, complete) or "ensemble" (an experiment's ensemble.zarr). DifferlandError otherwise."""
    location = as_location(location)
    url = location.url
    try:
        with quiet_zarr():
            ds = xr.open_zarr(zarr_store(Location(url, location.options)), zarr_format=3, consolidated=True)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise DifferlandError(f"{url}: cannot open as a zarr output store ({e})") from None
    if "differland_output_version" in ds.attrs:
        kind = "inference"
    elif "predictor_set" in ds.dims:
        kind = "ensemble"
    else:
        raise DifferlandError(f"{url}: neither an inference output nor an experiment's "
                              "ensemble.zarr (no differland_output_version, no predictor_set)")
    if not ds.attrs.get("complete"):
        raise DifferlandError(f"{url}: not complete; finish the run that writes it first")
    if kind == "ensemble" and "quantile" not in ds.dims:
        raise DifferlandError(f"{url}: an ensemble.zarr of an older version (a 'statistic' "
                              "dimension); rewrite it with `differland experiment --ensemble-only`")
    if "lat" not in ds.dims or "lon" not in ds.dims:
        raise DifferlandError(f"{url}: a store without a grid (sites); a (time, lat, lon) cube "
                              "needs a gridded store: use `differland infer --format netcdf`'s "
                              "series.nc for sites")
    return ds.drop_vars([DONE, WRITTEN_AT], errors="ignore"), kind


def source_series(ds: xr.Dataset) -> list[str]:
    """The (pixel, time) series of the source, in store order."""
    return [s.name for s in SERIES if s.name in ds.data_vars and "time" in ds[s.name].dims]


def _scatter(values: np.ndarray, row: np.ndarray, col: np.ndarray, n_lat: int, n_lon: int) -> np.ndarray:
    """(..., pixel, time) -> (..., time, lat, lon) float32, NaN where there is no pixel."""
    lead = values.shape[:-2]
    T = values.shape[-1]
    out = np.full(lead + (T, n_lat, n_lon), np.nan, np.float32)
    out[..., row, col] = np.swapaxes(values, -1, -2)  # (..., time, pixel)
    return out


def _cube_attrs(src_attrs: dict) -> dict:
    a = {k: v for k, v in src_attrs.items() if k not in _PIXEL_ONLY}
    a.update(grid_mapping="crs", cell_measures="area: cell_area")
    return a


def _cmorize(name: str, attrs: dict) -> tuple[str, dict, float]:
    """CMOR name, attributes and value factor of a series (unchanged when not in the table)."""
    v = CMOR_TABLE.get(name)
    if v is None:
        return name, attrs, 1.0
    factor = cmor_factor(attrs["units"], v)
    a = {k: x for k, x in attrs.items() if k != "standard_name"}
    a.update(units=v.units, long_name=v.long_name, original_name=name,
             original_units=attrs["units"])
    if v.standard_name:
        a["standard_name"] = v.standard_name
    if v.sign < 0:
        a["comment"] = f"sign flipped from differland's {name} (positive upward) to CMOR's " \
                       "positive downward"
    return v.name, a, factor


def cube_skeleton(ds: xr.Dataset) -> xr.Dataset:
    """The cube's small variables: time, lat, lon and their bounds, crs, cell_area, split
    (lat, lon) with flags; global attributes with provenance (pure but for the reads)."""
    with_b = with_bounds(ds)
    coords = {c: with_b[c] for c in ("time", "time_bnds", "lat", "lat_bnds", "lon", "lon_bnds")
              if c in with_b.variables}
    sk = xr.Dataset(coords={k: v.variable for k, v in coords.items()})
    if "time_bnds" not in sk.variables:
        raise DifferlandError("the output has no step_days: cannot give the time bounds that "
                              "'time: mean' needs (rerun infer with this version)")
    sk["time"].attrs = {k: v for k, v in ds["time"].attrs.items()
                        if k in ("standard_name", "long_name", "axis", "calendar")}
    sk["time"].attrs["bounds"] = "time_bnds"
    for c in ("lat", "lon"):
        sk[c].attrs = {**{k: v for k, v in ds[c].attrs.items()
                          if k in ("standard_name", "long_name", "units", "axis")},
                       "bounds": f"{c}_bnds"}
    sk["lat"].attrs.setdefault("axis", "Y")
    sk["lon"].attrs.setdefault("axis", "X")
    lat, lon = np.asarray(ds["lat"].values), np.asarray(ds["lon"].values)
    r = float(ds.attrs["grid_resolution_deg"])
    area = np.repeat(row_areas(lat, r)[:, None], lon.size, 1)
    sk["cell_area"] = xr.Variable(("lat", "lon"), area, {
        "units": "m2", "standard_name": "cell_area", "long_name": "area of the grid cell",
        "earth_radius_m": EARTH_RADIUS_M})
    sk["crs"] = xr.Variable((), np.int32(0), {
        "grid_mapping_name": "latitude_longitude", "semi_major_axis": EARTH_RADIUS_M,
        "inverse_flattening": 0.0, "long_name": "coordinate reference system (a sphere)"})
    row, col = np.asarray(ds["row"].values, np.int64), np.asarray(ds["col"].values, np.int64)
    split = np.full((lat.size, lon.size), -1, np.int8)
    split[row, col] = np.asarray(ds["split"].values, np.int8)
    sk["split"] = xr.Variable(("lat", "lon"), split, {
        "long_name": "data split of the pixel (by patch, as in the input store)", **SPLIT_FLAGS,
        "grid_mapping": "crs", "_FillValue": np.int8(-1)})
    keep = {k: v for k, v in ds.attrs.items()
            if k in ("title", "source", "checkpoint", "checkpoint_step", "source_store",
                     "network_sha256", "steps_per_year", "grid_resolution_deg", "members_json")
            or k in (provenance.VERSION_KEY, provenance.COMMIT_KEY, provenance.CONFIG_KEY)}
    sk.attrs = {**keep, "Conventions": "CF-1.8",
                "history": f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
                           "differland export (time, lat, lon) cube",
                **{f"exported_with_{k}": v for k, v in provenance.record().items()}}
    return sk


def cube_variables(ds: xr.Dataset, kind: str, series: Sequence[str], predictor_set: str | None,
                   cmor: bool):
    """Yield (name, xr.Variable) of each cube variable, one at a time (values read here)."""
    row, col = np.asarray(ds["row"].values, np.int64), np.asarray(ds["col"].values, np.int64)
    n_lat, n_lon = ds.sizes["lat"], ds.sizes["lon"]
    for name in series:
        attrs = dict(ds[name].attrs)
        new, attrs, factor = _cmorize(name, attrs) if cmor else (name, attrs, 1.0)
        if kind == "inference":
            parts = {new: (ds[name], attrs, ("time", "lat", "lon"))}
        else:
            sel = {"predictor_set": predictor_set}
            parts = {new: (ds[name].sel(sel), {**attrs, "long_name": f"{attrs['long_name']}: "
                                               f"ensemble mean ({predictor_set})"},
                           ("time", "lat", "lon")),
                     f"{new}_sd": (ds[f"{name}_sd"].sel(sel),
                                   {**{k: v for k, v in attrs.items() if k != "standard_name"},
                                    "long_name": f"{attrs['long_name']}: ensemble standard "
                                    f"deviation ({predictor_set})"}, ("time", "lat", "lon")),
                     f"{new}_quantile": (ds[f"{name}_quantile"].sel(sel),
                                         {**attrs, "long_name": f"{attrs['long_name']}: ensemble "
                                          f"quantiles ({predictor_set})"},
                                         ("quantile", "time", "lat", "lon"))}
        for vname, (arr, a, dims) in parts.items():
            values = np.asarray(arr.values, np.float64) * (abs(factor) if vname.endswith("_sd")
                                                          else factor)
            if factor < 0 and "quantile" in dims:
                # the q-quantile of -x is minus the (1 - q)-quantile of x
                values = values[_mirror(np.asarray(ds["quantile"].values, np.float64))]
            cube = _scatter(values, row, col, n_lat, n_lon)
            a = _cube_attrs(a)
            if vname.endswith("_sd") or vname.endswith("_quantile"):
                a.pop("comment", None)
            yield vname, xr.Variable(dims, cube, a)


def _mirror(q: np.ndarray) -> np.ndarray:
    """Index of the (1 - q)-quantile for each quantile q (ValueError if one is missing)."""
    idx = np.abs(q[None, :] - (1.0 - q)[:, None]).argmin(1)
    if not np.allclose(q[idx], 1.0 - q):
        raise ValueError(f"quantiles {q.tolist()} are not symmetric: cannot flip their sign")
    return idx


def _choose_set(ds: xr.Dataset, kind: str, predictor_set: str | None) -> str | None:
    if kind != "ensemble":
        if predictor_set:
            raise DifferlandError("--set applies to an experiment's ensemble.zarr only")
        return None
    sets = [str(s) for s in ds["predictor_set"].values]
    if predictor_set is None:
        if len(sets) > 1:
            raise DifferlandError(f"the ensemble has predictor sets {', '.join(sets)}: choose "
                                  "one with --set")
        return sets[0]
    if predictor_set not in sets:
        raise DifferlandError(f"--set {predictor_set}: not in the ensemble ({', '.join(sets)})")
    return predictor_set


def _encoding(name: str, var: xr.Variable | xr.DataArray, fmt: str) -> dict:
    if name in ("time", "time_bnds"):
        return {"_FillValue": None, "dtype": "float64"}
    if var.dtype.kind == "f" and var.ndim >= 3:
        enc = {"_FillValue": np.float32(np.nan), "dtype": "float32"}
        if fmt == "netcdf":
            enc.update(zlib=True, complevel=1)
        return enc
    if name == "split":
        return {}
    return {"_FillValue": None}


def export_cube(source: Location | str, dest: Location | str, series: Sequence[str] | None = None,
                cmor: bool = False, predictor_set: str | None = None,
                overwrite: bool = False) -> str:
    """Write the (time, lat, lon) cube of the output at ``source`` to ``dest`` (``.nc`` or
    ``.zarr``), built locally then moved (or uploaded) into place whole. Returns ``dest``'s
    URL."""
    source, target_loc = as_location(source), as_location(dest)
    url, dest = source.url, target_loc.url
    ext = os.path.splitext(dest)[1]
    if ext not in FORMATS:
        raise DifferlandError(f"--out {dest}: expected a .nc or .zarr name")
    fmt = FORMATS[ext]
    fs, root = target_loc.fs, target_loc.path
    if fs.exists(root) and not overwrite:
        raise DifferlandError(f"{dest} exists; pass --overwrite to replace it")
    ds, kind = open_source(source)
    have = source_series(ds)
    chosen = list(series) if series else have
    missing = [n for n in chosen if n not in have]
    if missing:
        raise DifferlandError(f"series {missing} not in {url} (it has {', '.join(have)})")
    pset = _choose_set(ds, kind, predictor_set)
    sk = cube_skeleton(ds)
    sk.attrs["source_output"] = url
    sk.attrs["source_kind"] = kind
    if pset:
        sk.attrs["predictor_set"] = pset
    if cmor:
        sk.attrs["variable_naming"] = "CMOR/ILAMB (differland_dist.inference.cmor)"
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    with tempfile.TemporaryDirectory(prefix="differland-cube-") as tmp:
        path = os.path.join(tmp, os.path.basename(root.rstrip("/")))
        time_attrs = {"units": ds["time"].encoding.get("units", ds["time"].attrs.get("units",
                                                        "days since 2001-01-01")),
                      "calendar": ds["time"].encoding.get("calendar", "standard")}
        enc = {n: _encoding(n, v, fmt) for n, v in sk.variables.items()}
        for n in ("time", "time_bnds"):
            enc[n].update(time_attrs)
        if kind == "ensemble":
            sk = sk.assign_coords(quantile=xr.Variable("quantile", np.asarray(ds["quantile"].values,
                                                                              np.float64),
                                                       dict(ds["quantile"].attrs)))
            enc["quantile"] = {"_FillValue": None}
        _write(sk, path, fmt, enc, first=True)
        n = 0
        for vname, var in cube_variables(ds, kind, chosen, pset, cmor):
            # the group's attributes again: appending to a zarr group replaces them
            _write(xr.Dataset({vname: var}, attrs=sk.attrs), path, fmt,
                   {vname: _encoding(vname, var, fmt)}, first=False)
            n += 1
        if fmt == "zarr":
            import zarr

            with quiet_zarr():
                zarr.consolidate_metadata(path, zarr_format=3)
        if local:
            target = root
            if os.path.exists(target):
                (shutil.rmtree if os.path.isdir(target) else os.remove)(target)
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
            shutil.move(path, target)
        elif fmt == "netcdf":
            fs.put_file(path, root)  # one object: atomic
        else:
            if fs.exists(root):
                fs.rm(root, recursive=True)
            fs.put(path, root, recursive=True)
    log.info("wrote %s: %d (time, lat, lon) variable(s) from %s", dest, n, url)
    return dest


def _write(part: xr.Dataset, path: str, fmt: str, enc: dict, first: bool) -> None:
    part = part.copy()
    for v in part.variables.values():  # flags as the variable's own type (CF 3.5)
        if "flag_values" in v.attrs:
            v.attrs["flag_values"] = np.asarray(v.attrs["flag_values"], v.dtype)
    part.attrs = {k: (json.dumps(v) if isinstance(v, (list, dict, bool)) else v)
                  for k, v in part.attrs.items()}
    if fmt == "netcdf":
        part.to_netcdf(path, mode="w" if first else "a", engine="netcdf4", format="NETCDF4",
                       encoding=enc)
    else:
        with quiet_zarr():
            part.to_zarr(path, mode="w" if first else "a", zarr_format=3, consolidated=False,
                         encoding=enc)
