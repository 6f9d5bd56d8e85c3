"""The ensemble output of an experiment: inference of the kept members, their statistics per
predictor set, and the ensemble-mean model output that the evaluation scores.

Written into the experiment directory:

* ``members/<set>/m<seed>/inference.zarr``: each kept member's inference output (Ray Data);
* ``ensemble/<set>.zarr``: the ensemble mean as an ordinary inference output (same layout as
  ``differland infer`` writes, so ``differland evaluate`` and the Python API read it);
* ``ensemble.zarr``: per predictor set (dimension ``predictor_set``) the ensemble statistics of
  the 40 parameters (``param_<name>``, pixel), of the monthly series (``<series>``, pixel ×
  time) and of the gridded parameter maps (``map_<name>``, lat × lon): the mean under the
  variable's own name, the standard deviation as ``<name>_sd`` and the 5/50/95 % quantiles as
  ``<name>_quantile`` along a numeric ``quantile`` coordinate (0.05, 0.5, 0.95); with CF
  attributes (units, standard name of the mean, cell methods, coordinates, cell measures,
  grid mapping), the members' time, step lengths, cell areas and crs, the split as flags,
  ``Conventions`` and provenance.

Statistics are computed block by block over whole output chunks, so memory is bounded by one
block of every kept member, not by the store.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from typing import Any, Sequence

import numpy as np
import xarray as xr
import zarr

from differland_dist.common import provenance
from differland_dist.data.store import PixelStore, zarr_store
from differland_dist.errors import DifferlandError
from differland_dist.inference import output as out_mod
from differland_dist.storage.location import Location, join
from differland_dist.model import calendar

log = logging.getLogger(__name__)

ENSEMBLE = "ensemble.zarr"
ENSEMBLE_KIND = "experiment-ensemble"
MEAN_DIR = "ensemble"
#: What :func:`stats` returns, in order.
STATISTICS = ("mean", "sd", "q05", "q50", "q95")
#: The quantiles' probabilities (the ``quantile`` coordinate).
QUANTILES = (0.05, 0.5, 0.95)
_Q = tuple(100.0 * q for q in QUANTILES)


def stats(x: np.ndarray) -> np.ndarray:
    """(M, ...) member values -> (5, ...) mean, sd (ddof 1; 0 for one member), q05, q50, q95,
    NaN-aware (a member with NaN at a pixel is left out there)."""
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as wanted
        n = np.sum(np.isfinite(x), axis=0)
        mean = np.nanmean(x, axis=0)
        sd = np.where(n > 1, np.nanstd(x, axis=0, ddof=1) if x.shape[0] > 1 else 0.0, 0.0)
        q = np.nanpercentile(x, _Q, axis=0)
    return np.stack([mean, sd, *q]).astype(np.float32)


def _series_attrs(name: str, gridded: bool) -> dict[str, Any]:
    """The CF attributes of an inference output's series (units, standard name, cell methods,
    coordinates, cell measures)."""
    return {k: v for k, v in out_mod.series_attrs(out_mod.SERIES_BY_NAME[name], gridded).items()
            if k != "model_outputs"}


def _param_attrs(name: str, gridded: bool) -> dict[str, Any]:
    units, long_name = {p[0]: (p[1], p[2]) for p in out_mod.PARAMETERS}[name]
    return {"units": units, "long_name": long_name, "coordinates": "pixel_lat pixel_lon",
            **({"cell_measures": "area: pixel_area"} if gridded else {})}


def _map_attrs(name: str) -> dict[str, Any]:
    units, long_name = {p[0]: (p[1], p[2]) for p in out_mod.PARAMETERS}[name]
    return {"units": units, "long_name": f"{long_name} (map)", "grid_mapping": "crs",
            "cell_measures": "area: cell_area"}


def ensemble_mean_output(url: str, store: PixelStore, members: Sequence[str], series: Sequence[str],
                         storage_options: dict | None = None) -> str:
    """Write the mean of member outputs ``members`` (inference output URLs) as an inference
    output at ``url`` (resumable by chunk, like inference); returns ``url``."""
    groups = [out_mod.open_output(u, storage_options) for u in members]
    first = dict(groups[0].attrs)
    attrs = {k: first[k] for k in ("source_store", "source_store_meta_sha256", "model_closed_budget",
                                   "network_activation", "predictor_sets", "warm_up", "config_json")
             if k in first}
    attrs.update(checkpoint=f"ensemble mean of {len(members)} members",
                 checkpoint_file=json.dumps(list(members)), checkpoint_step=int(first.get("checkpoint_step", 0)),
                 network_sha256=out_mod.digest(json.dumps([dict(g.attrs).get("network_sha256")
                                                           for g in groups]).encode()),
                 ensemble_members=list(members))
    existing = out_mod.read_attrs(url, storage_options)
    if existing is None:
        out_mod.create_output(url, store, series, attrs, storage_options,
                              chunk_pixels=int(first["chunk_pixels"]))
    elif existing.get("network_sha256") != attrs["network_sha256"] or existing.get("series") != list(series):
        out_mod.remove_output(url, storage_options)
        out_mod.create_output(url, store, series, attrs, storage_options,
                              chunk_pixels=int(first["chunk_pixels"]))
    elif existing.get("complete"):
        return url
    writer = out_mod.ChunkWriter(url, storage_options)
    done = out_mod.done_chunks(writer.group)
    C, N = writer.C, writer.N
    for k in np.flatnonzero(~done):
        s = out_mod.chunk_range(int(k), int(k) + 1, C, N)
        params = np.nanmean(member_params(groups, s), axis=0).astype(np.float32)
        ser = {n: np.nanmean(np.stack([np.asarray(g[n][s]) for g in groups]), axis=0).astype(np.float32)
               for n in series}
        writer.write(int(k), int(k) + 1, params, ser)
    out_mod.finish(url, storage_options)
    return url


def _cf_attrs(arr) -> dict[str, Any]:
    """The descriptive CF attributes of a member output's variable (not its encoding)."""
    keep = ("units", "long_name", "standard_name", "calendar", "axis", "bounds")
    return {k: v for k, v in dict(arr.attrs).items() if k in keep}


def _read_params(group, s: slice) -> np.ndarray:
    return np.stack([np.asarray(group[out_mod.param_var(n)][s]) for n in out_mod.PARAM_NAMES], axis=1)


_DATES = calendar.date_columns(out_mod.PARAM_NAMES)


def member_params(groups, s: slice) -> np.ndarray:
    """(M, n, 40) the members' parameters at pixels ``s``, their phenology dates moved by whole
    years into one year (:func:`calendar.same_year`: DALEC's dates have a one-year period, and
    members may learn the same date in different years)."""
    x = np.stack([_read_params(g, s) for g in groups]).astype(np.float64)
    x[:, :, _DATES] = calendar.same_year(x[:, :, _DATES])
    return x


def _stat_attrs(base: dict[str, Any], what: str) -> dict[str, Any]:
    """Attributes of an ensemble statistic of a variable with attributes ``base``: the mean
    keeps the standard name (a mean of the quantity is the quantity), sd and quantiles not."""
    a = {k: v for k, v in base.items() if what == "mean" or k != "standard_name"}
    a["long_name"] = f"{base['long_name']}: ensemble {STAT_LONG[what]} over the kept members"
    return a


#: What each ensemble variable holds: ``<name>`` the mean, ``<name>_sd``, ``<name>_quantile``.
STAT_LONG = {"mean": "mean", "sd": "standard deviation (ddof 1)", "quantile": "quantiles"}


def stat_var(name: str, what: str) -> str:
    """The ensemble variable of a statistic: ``gpp`` (mean), ``gpp_sd``, ``gpp_quantile``."""
    return name if what == "mean" else f"{name}_{what}"


def write_ensemble(url: str, store: PixelStore, members_by_set: dict[str, list[str]],
                   series: Sequence[str], storage_options: dict | None = None) -> str:
    """Write ``ensemble.zarr`` (see the module doc) from the kept members' outputs of each set
    (set name -> inference output URLs). Rewritten whole (it is derived data)."""
    t0 = time.perf_counter()
    sets = list(members_by_set)
    if not sets or not all(members_by_set.values()):
        raise DifferlandError("write_ensemble: every predictor set needs at least one kept member")
    loc = Location(url, storage_options)
    if loc.check_replaceable(ENSEMBLE_KIND, overwrite=True):
        loc.clear_owned(ENSEMBLE_KIND)
    groups = {k: [out_mod.open_output(u, storage_options) for u in v] for k, v in members_by_set.items()}
    first = groups[sets[0]][0]
    fattrs = dict(first.attrs)
    N, T = int(fattrs["n_pixels"]), int(fattrs["n_time"])
    C = int(fattrs["chunk_pixels"])
    grid = out_mod.store_grid(store)
    S, Q = len(sets), len(QUANTILES)
    params, maps = [f"param_{n}" for n in out_mod.PARAM_NAMES], [f"map_{n}" for n in out_mod.PARAM_NAMES]
    # CF companions copied from the first member (all members share the store's pixels, grid
    # and time axis): the step lengths (time bounds), cell areas and the grid mapping
    companions = [c for c in ("step_days", "time_bnds", "pixel_area", "cell_area", "crs") if c in first]
    var_names = [stat_var(v, w) for v in [*params, *series, *(maps if grid is not None else [])]
                 for w in STAT_LONG]
    loc.claim(ENSEMBLE_KIND, ["zarr.json", "predictor_set", "quantile", "time", "pixel_lat",
                              "pixel_lon", "row", "col", "split", "members", *companions,
                              *var_names, "lat", "lon"])
    coords = {
        "predictor_set": xr.Variable("predictor_set", np.array(sets, dtype=object),
                                     {"long_name": "predictor set of the network"}),
        "quantile": xr.Variable("quantile", np.array(QUANTILES, np.float64),
                                {"units": "1", "long_name": "probability of the ensemble quantile "
                                 "over the kept members (linear interpolation)"}),
        "time": xr.Variable("time", np.asarray(first["time"][:], np.float64), _cf_attrs(first["time"])),
        "pixel_lat": xr.Variable("pixel", np.asarray(first["pixel_lat"][:]), _cf_attrs(first["pixel_lat"])),
        "pixel_lon": xr.Variable("pixel", np.asarray(first["pixel_lon"][:]), _cf_attrs(first["pixel_lon"])),
        "row": xr.Variable("pixel", np.asarray(first["row"][:], np.int32), _cf_attrs(first["row"])),
        "col": xr.Variable("pixel", np.asarray(first["col"][:], np.int32), _cf_attrs(first["col"])),
        "split": xr.Variable("pixel", np.asarray(store.split, np.int8), {
            "long_name": "data split of the pixel (as written in the store)",
            "flag_values": [0, 1, 2], "flag_meanings": "train dev test"}),
        "members": xr.Variable("predictor_set", np.array([len(groups[k]) for k in sets], np.int32),
                               {"units": "1", "long_name": "kept members in the ensemble"}),
    }
    for c in companions:
        a = first[c]
        coords[c] = xr.Variable(tuple(a.metadata.dimension_names or ()), np.asarray(a[...]),
                                {k: v for k, v in dict(a.attrs).items() if k != "_FillValue"})
    if grid is not None:
        coords["lat"] = xr.Variable("lat", grid.lat, _cf_attrs(first["lat"]))
        coords["lon"] = xr.Variable("lon", grid.lon, _cf_attrs(first["lon"]))
    zs = zarr_store(Location(url, storage_options), read_only=False)
    xr.Dataset(coords=coords, attrs={
        "title": "DifferLand experiment ensemble", "Conventions": "CF-1.8",
        "history": f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} created by differland experiment",
        "members_json": json.dumps(members_by_set), "n_pixels": N, "n_time": T,
        "grid_resolution_deg": float(fattrs.get("grid_resolution_deg", 0) or 0),
        "steps_per_year": int(fattrs.get("steps_per_year", 0)),
        **provenance.record(fattrs.get("config_json")),
        "complete": False}).to_zarr(zs, mode="a", zarr_format=3, consolidated=False)
    g = zarr.open_group(zs, mode="r+", zarr_format=3)

    def create(name: str, base: dict, dims: tuple[str, ...], shape: tuple[int, ...],
               chunks: tuple[int, ...]) -> None:
        for what in STAT_LONG:
            q = what == "quantile"
            g.create_array(stat_var(name, what), shape=(S, *((Q,) if q else ()), *shape),
                           chunks=(1, *((1,) if q else ()), *chunks), dtype="float32",
                           fill_value=np.nan,
                           dimension_names=("predictor_set", *(("quantile",) if q else ()), *dims),
                           attributes=_stat_attrs(base, what))

    gridded = grid is not None
    for name, pname in zip(params, out_mod.PARAM_NAMES):
        create(name, _param_attrs(pname, gridded), ("pixel",), (N,), (C,))
    for name in series:
        create(name, _series_attrs(name, gridded), ("pixel", "time"), (N, T), (C, T))
    if gridded:
        for name, pname in zip(maps, out_mod.PARAM_NAMES):
            create(name, _map_attrs(pname), ("lat", "lon"), (grid.lat.size, grid.lon.size),
                   (min(grid.lat.size, 360), min(grid.lon.size, 720)))

    def put(name: str, si: int, st: np.ndarray, index=slice(None)) -> None:
        """Write stats (5, ...) = mean, sd, quantiles of set ``si`` at ``index``."""
        g[name][(si, index)] = st[0]
        g[stat_var(name, "sd")][(si, index)] = st[1]
        g[stat_var(name, "quantile")][(si, slice(None), index)] = st[2:]

    for si, set_name in enumerate(sets):
        members = groups[set_name]
        pstats = np.full((len(STATISTICS), N, len(params)), np.nan, np.float32)
        for a in range(0, N, C):
            s = slice(a, min(a + C, N))
            pstats[:, s, :] = stats(member_params(members, s))
            for name in series:
                put(name, si, stats(np.stack([np.asarray(m[name][s]) for m in members])), s)
        for j, name in enumerate(params):
            put(name, si, pstats[:, :, j])
        if gridded:
            for j, name in enumerate(maps):
                put(name, si, np.stack([out_mod.to_grid(pstats[k, :, j], grid)
                                        for k in range(len(STATISTICS))]))
        log.info("ensemble %s: %d members, %d pixels", set_name, len(members), N)
    zarr.consolidate_metadata(zs, zarr_format=3)
    g = zarr.open_group(zs, mode="r+", zarr_format=3, use_consolidated=True)
    g.attrs["complete"] = True
    log.info("wrote %s (%d sets) in %.1f s", url, S, time.perf_counter() - t0)
    return url


def mean_output_url(out: str, set_name: str) -> str:
    return join(out, MEAN_DIR, f"{set_name}.zarr")
