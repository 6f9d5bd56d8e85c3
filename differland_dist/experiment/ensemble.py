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
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import xarray as xr
import zarr

from differland_dist.common import provenance
from differland_dist.data.store import PixelStore, zarr_store
from differland_dist.errors import DifferlandError
from differland_dist.inference.output import (
    ChunkWriter, chunk_range, create_output, digest, done_chunks, finish, open_output, read_attrs, remove_output)
from differland_dist.storage.location import Location, as_location
from differland_dist.vocabulary.cf import parameter_attrs, parameter_map_attrs, series_attrs
from differland_dist.vocabulary.grid import store_grid, to_grid
from differland_dist.vocabulary.parameters import BY_OUTPUT_NAME, PARAM_NAMES
from differland_dist.vocabulary.series import SERIES_BY_NAME, param_var
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
    return {k: v for k, v in series_attrs(SERIES_BY_NAME[name], gridded).items()
            if k != "model_outputs"}


def _param_attrs(name: str, gridded: bool) -> dict[str, Any]:
    return {**parameter_attrs(BY_OUTPUT_NAME[name]),
            **({"cell_measures": "area: pixel_area"} if gridded else {})}


def _map_attrs(name: str) -> dict[str, Any]:
    return parameter_map_attrs(BY_OUTPUT_NAME[name])


def ensemble_mean_output(out: str | Location, store: PixelStore,
                         members: Sequence[str | Location], series: Sequence[str]) -> Location:
    """Write the mean of member outputs ``members`` (inference outputs) as an inference output
    at ``out`` (resumable by chunk, like inference); returns ``out``. URL strings are reached
    with no storage options."""
    out = as_location(out)
    members = [as_location(m, out.options) for m in members]
    urls = [m.url for m in members]
    groups = [open_output(m) for m in members]
    first = dict(groups[0].attrs)
    attrs = {k: first[k] for k in ("source_store", "source_store_meta_sha256", "model_closed_budget",
                                   "network_activation", "predictor_sets", "warm_up", "config_json")
             if k in first}
    attrs.update(checkpoint=f"ensemble mean of {len(members)} members",
                 checkpoint_file=json.dumps(urls), checkpoint_step=int(first.get("checkpoint_step", 0)),
                 network_sha256=digest(json.dumps([dict(g.attrs).get("network_sha256")
                                                           for g in groups]).encode()),
                 ensemble_members=urls)
    existing = read_attrs(out)
    if existing is None:
        create_output(out, store, series, attrs, chunk_pixels=int(first["chunk_pixels"]))
    elif existing.get("network_sha256") != attrs["network_sha256"] or existing.get("series") != list(series):
        remove_output(out)
        create_output(out, store, series, attrs, chunk_pixels=int(first["chunk_pixels"]))
    elif existing.get("complete"):
        return out
    writer = ChunkWriter(out)
    done = done_chunks(writer.group)
    C, N = writer.C, writer.N
    for k in np.flatnonzero(~done):
        s = chunk_range(int(k), int(k) + 1, C, N)
        params = np.nanmean(member_params(groups, s), axis=0).astype(np.float32)
        ser = {n: np.nanmean(np.stack([np.asarray(g[n][s]) for g in groups]), axis=0).astype(np.float32)
               for n in series}
        writer.write(int(k), int(k) + 1, params, ser)
    finish(out)
    return out


def _cf_attrs(arr) -> dict[str, Any]:
    """The descriptive CF attributes of a member output's variable (not its encoding)."""
    keep = ("units", "long_name", "standard_name", "calendar", "axis", "bounds")
    return {k: v for k, v in dict(arr.attrs).items() if k in keep}


def _read_params(group, s: slice) -> np.ndarray:
    return np.stack([np.asarray(group[param_var(n)][s]) for n in PARAM_NAMES], axis=1)


_DATES = calendar.date_columns(PARAM_NAMES)


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


def write_ensemble(out: str | Location, store: PixelStore,
                   members_by_set: dict[str, Sequence[str | Location]],
                   series: Sequence[str]) -> Location:
    """Write ``ensemble.zarr`` (see the module doc) at ``out`` from the kept members' outputs
    of each set (set name -> inference outputs; URL strings are reached with ``out``'s storage
    options). Rewritten whole (it is derived data)."""
    t0 = time.perf_counter()
    out = as_location(out)
    sets = list(members_by_set)
    if not sets or not all(members_by_set.values()):
        raise DifferlandError("write_ensemble: every predictor set needs at least one kept member")
    if out.check_replaceable(ENSEMBLE_KIND, overwrite=True):
        out.clear_owned(ENSEMBLE_KIND)
    members = {k: [as_location(m, out.options) for m in v] for k, v in members_by_set.items()}
    groups = {k: [open_output(m) for m in v] for k, v in members.items()}
    lay = _Layout.of(groups[sets[0]][0], store, series)
    out.claim(ENSEMBLE_KIND, ["zarr.json", "predictor_set", "quantile", "time", "pixel_lat",
                              "pixel_lon", "row", "col", "split", "members", *lay.companions,
                              *lay.var_names(), "lat", "lon"])
    zs = zarr_store(out, read_only=False)
    fattrs = dict(lay.first.attrs)
    xr.Dataset(coords=_coords(lay, store, groups), attrs={
        "title": "DifferLand experiment ensemble", "Conventions": "CF-1.8",
        "history": f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} created by differland experiment",
        "members_json": json.dumps({k: [m.url for m in v] for k, v in members.items()}),
        "n_pixels": lay.N, "n_time": lay.T,
        "grid_resolution_deg": float(fattrs.get("grid_resolution_deg", 0) or 0),
        "steps_per_year": int(fattrs.get("steps_per_year", 0)),
        **provenance.record(fattrs.get("config_json")),
        "complete": False}).to_zarr(zs, mode="a", zarr_format=3, consolidated=False)
    g = zarr.open_group(zs, mode="r+", zarr_format=3)
    _create_arrays(g, lay, len(sets))
    for si, set_name in enumerate(sets):
        _write_set(g, lay, si, groups[set_name])
        log.info("ensemble %s: %d members, %d pixels", set_name, len(groups[set_name]), lay.N)
    zarr.consolidate_metadata(zs, zarr_format=3)
    g = zarr.open_group(zs, mode="r+", zarr_format=3, use_consolidated=True)
    g.attrs["complete"] = True
    log.info("wrote %s (%d sets) in %.1f s", out.url, len(sets), time.perf_counter() - t0)
    return out


@dataclass(frozen=True)
class _Layout:
    """What the ensemble's arrays look like, from the first member's output (all members share
    the store's pixels, grid and time axis)."""

    first: Any  # the first member's output group
    N: int  # pixels
    T: int  # time steps
    C: int  # pixels per output chunk
    grid: Any  # the store's grid (None for sites)
    series: tuple[str, ...]
    #: CF companions copied from the first member: the step lengths (time bounds), cell areas
    #: and the grid mapping
    companions: tuple[str, ...]

    @classmethod
    def of(cls, first, store: PixelStore, series: Sequence[str]) -> "_Layout":
        a = dict(first.attrs)
        return cls(first, int(a["n_pixels"]), int(a["n_time"]), int(a["chunk_pixels"]),
                   store_grid(store), tuple(series),
                   tuple(c for c in ("step_days", "time_bnds", "pixel_area", "cell_area", "crs")
                         if c in first))

    @property
    def params(self) -> list[str]:
        return [f"param_{n}" for n in PARAM_NAMES]

    @property
    def maps(self) -> list[str]:
        return [f"map_{n}" for n in PARAM_NAMES] if self.grid is not None else []

    def var_names(self) -> list[str]:
        return [stat_var(v, w) for v in [*self.params, *self.series, *self.maps] for w in STAT_LONG]


def _coords(lay: _Layout, store: PixelStore, groups: dict[str, list]) -> dict[str, xr.Variable]:
    """The ensemble's coordinates: sets, quantiles, time, the pixels and their split, the
    members per set, the CF companions and (gridded) the grid axes."""
    first = lay.first
    sets = list(groups)
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
    for c in lay.companions:
        a = first[c]
        coords[c] = xr.Variable(tuple(a.metadata.dimension_names or ()), np.asarray(a[...]),
                                {k: v for k, v in dict(a.attrs).items() if k != "_FillValue"})
    if lay.grid is not None:
        coords["lat"] = xr.Variable("lat", lay.grid.lat, _cf_attrs(first["lat"]))
        coords["lon"] = xr.Variable("lon", lay.grid.lon, _cf_attrs(first["lon"]))
    return coords


def _create_arrays(g, lay: _Layout, n_sets: int) -> None:
    """The empty (NaN) statistic arrays of every parameter, series and map."""
    Q = len(QUANTILES)

    def create(name: str, base: dict, dims: tuple[str, ...], shape: tuple[int, ...],
               chunks: tuple[int, ...]) -> None:
        for what in STAT_LONG:
            q = what == "quantile"
            g.create_array(stat_var(name, what), shape=(n_sets, *((Q,) if q else ()), *shape),
                           chunks=(1, *((1,) if q else ()), *chunks), dtype="float32",
                           fill_value=np.nan,
                           dimension_names=("predictor_set", *(("quantile",) if q else ()), *dims),
                           attributes=_stat_attrs(base, what))

    gridded = lay.grid is not None
    for name, pname in zip(lay.params, PARAM_NAMES):
        create(name, _param_attrs(pname, gridded), ("pixel",), (lay.N,), (lay.C,))
    for name in lay.series:
        create(name, _series_attrs(name, gridded), ("pixel", "time"), (lay.N, lay.T), (lay.C, lay.T))
    for name, pname in zip(lay.maps, PARAM_NAMES):
        create(name, _map_attrs(pname), ("lat", "lon"), (lay.grid.lat.size, lay.grid.lon.size),
               (min(lay.grid.lat.size, 360), min(lay.grid.lon.size, 720)))


def _write_set(g, lay: _Layout, si: int, members: list) -> None:
    """The statistics of set ``si`` over its member outputs, block by block over whole output
    chunks (memory: one block of every member)."""

    def put(name: str, st: np.ndarray, index=slice(None)) -> None:
        """Write stats (5, ...) = mean, sd, quantiles of set ``si`` at ``index``."""
        g[name][(si, index)] = st[0]
        g[stat_var(name, "sd")][(si, index)] = st[1]
        g[stat_var(name, "quantile")][(si, slice(None), index)] = st[2:]

    N, C = lay.N, lay.C
    pstats = np.full((len(STATISTICS), N, len(lay.params)), np.nan, np.float32)
    for a in range(0, N, C):
        s = slice(a, min(a + C, N))
        pstats[:, s, :] = stats(member_params(members, s))
        for name in lay.series:
            put(name, stats(np.stack([np.asarray(m[name][s]) for m in members])), s)
    for j, name in enumerate(lay.params):
        put(name, pstats[:, :, j])
    for j, name in enumerate(lay.maps):
        put(name, np.stack([to_grid(pstats[k, :, j], lay.grid)
                            for k in range(len(STATISTICS))]))


def mean_output(root: Location, set_name: str) -> Location:
    """The ensemble-mean inference output of a set in the experiment directory ``root``."""
    return root.join(MEAN_DIR, f"{set_name}.zarr")
