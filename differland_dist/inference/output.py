"""The inference output store: layout, creation, per-chunk completion markers and finishing.

The names it holds (series, parameters, CF attributes, the grid) are the shared vocabulary
(``differland_dist.vocabulary``); this module only writes and reads the store.

One zarr v3 group, readable with ``xarray.open_zarr`` (times decode to datetimes):

Dimensions
  ``pixel``  the input store's land pixels, same order; ``time`` the input store's steps;
  ``lat``, ``lon`` the regular grid of the input store (gridded maps; absent for site stores);
  ``chunk``  the output's pixel chunks (completion bookkeeping).

Coordinates
  ``time`` (time) float64, CF ``days since 2001-01-01`` (decoded by xarray);
  ``pixel_lat``, ``pixel_lon`` (pixel) degrees; ``row``, ``col``, ``patch``, ``split`` (pixel)
  copied from the input store; ``lat`` (lat), ``lon`` (lon) grid cell centres.

Per-pixel parameters, (pixel,) float32, physical values with the parameter table's units
(``vocabulary.parameters``): ``param_<name>`` for the 31 process parameters, ``param_Bday``,
``param_Fday`` and the initial pools ``param_init_<pool>`` (``PARAM_NAMES``, the same 40 names
as a synthetic store's ``param``).

Gridded parameter maps, (lat, lon) float32, NaN off the land pixels: ``map_<same names>``.

Monthly series, (pixel, time) float32 (the catalogue ``vocabulary.series.SERIES``): ``gpp``, ``reco`` (= gpp + nee =
autotrophic + heterotrophic respiration), ``ra``, ``rh``, ``nee``, ``nbe``, ``fire`` (total fire
combustion), ``et``, ``lai``, ``sif``, ``vod``, ``runoff`` and the seven pools at the end of each
step ``pool_labile`` ... ``pool_water``.

Every variable has ``units`` and ``long_name`` (CF style). Arrays with a ``pixel`` dimension are
chunked along ``pixel`` by ``C = attrs["chunk_pixels"]``, a whole number of the input store's
pixel chunks (``max_patch_size``; see :func:`output_chunk`), and whole along ``time``, so output
chunk ``k`` is pixels ``[k*C, (k+1)*C)`` and covers whole input chunks: a task that writes
chunks ``k0..k1-1`` writes whole chunk objects that no other task touches.

Bookkeeping: ``chunk_done`` (chunk,) int8, one object per chunk, set to 1 only after every
variable of the chunk is written (the commit marker); ``chunk_written_at`` (chunk,) float64
(Unix seconds of the commit). Group attributes: ``complete`` (False until every chunk is
committed and the maps are written: set last), the input store's URL and metadata digest, the
checkpoint's URL, step and network digest, the model options and the full training config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from concurrent.futures import Executor
from typing import Any, Sequence

import numpy as np
import xarray as xr
import zarr

from differland_dist.common import provenance
from differland_dist.data.store import PixelStore, quiet_zarr, zarr_store
from differland_dist.data.rows import with_retries
from differland_dist.errors import DifferlandError
from differland_dist.storage.location import Location, as_location
from differland_dist.inference.site_time import SITE_TIME, site_times
from differland_dist.inference.time_bounds import with_time_bounds
from differland_dist.vocabulary.cf import cf_attrs, parameter_attrs, parameter_map_attrs, series_attrs
from differland_dist.vocabulary.grid import EARTH_RADIUS_M, Grid, row_areas, store_grid, to_grid
from differland_dist.vocabulary.parameters import PARAM_NAMES, PARAMETERS
from differland_dist.vocabulary.series import SERIES_BY_NAME, map_var, param_var

log = logging.getLogger(__name__)

OUTPUT_VERSION = 1
#: The ownership kind of an inference output (see :meth:`differland_dist.storage.location.Location.claim`).
OUTPUT_KIND = "inference-output"
ROOT_META = "zarr.json"
DONE = "chunk_done"
#: Per-pixel coordinates copied from the input store.
PIXEL_COORDS = ("pixel_lat", "pixel_lon", "row", "col", "patch", "split")
WRITTEN_AT = "chunk_written_at"


# -- identity ---------------------------------------------------------------------------------
def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_digest(store: PixelStore) -> str:
    """sha256 of the input store's root metadata (shapes, attributes; one small read)."""
    return digest(with_retries(lambda: store.fs.cat_file(f"{store.root}/{ROOT_META}"),
                               f"{store.url}/{ROOT_META}", fs=store.fs))


def network_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the sorted names, dtypes, shapes and bytes of arrays (a network's weights)."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}\t{a.dtype.str}\t{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# -- creation -----------------------------------------------------------------------------------
def _coords_dataset(store: PixelStore, grid: Grid | None, attrs: dict) -> xr.Dataset:
    """The small variables written eagerly: coordinates copied from the input store."""
    a = store.array
    tattrs = dict(a("time").attrs)
    time_units = tattrs.get("units", "days since 2001-01-01")
    data = {
        "time": xr.Variable("time", np.asarray(a("time")[:], np.float64),
                            cf_attrs(time_units, "mid-step time", calendar="standard", standard_name="time",
                                axis="T")),
        "pixel_lat": xr.Variable("pixel", np.asarray(a("lat")[:], np.float32),
                                 cf_attrs("degrees_north", "pixel centre latitude", standard_name="latitude")),
        "pixel_lon": xr.Variable("pixel", np.asarray(a("lon")[:], np.float32),
                                 cf_attrs("degrees_east", "pixel centre longitude", standard_name="longitude")),
        "row": xr.Variable("pixel", np.asarray(a("row")[:], np.int32), cf_attrs("1", "grid row of the pixel")),
        "col": xr.Variable("pixel", np.asarray(a("col")[:], np.int32), cf_attrs("1", "grid column of the pixel")),
        "patch": xr.Variable("pixel", store.patch, cf_attrs("1", "patch the pixel belongs to")),
        "split": xr.Variable("pixel", np.asarray(store.split, np.int8), {
            "long_name": "data split of the pixel (by patch, as in the input store)",
            "flag_values": [0, 1, 2], "flag_meanings": "train dev test"}),
    }
    data.update(site_times(store, data["time"].attrs))  # sites of different years: their dates
    if "delta_t" in store.array_names:
        dt = np.asarray(a("delta_t")[:], np.float64).reshape(-1)
        if dt.shape == (store.n_time,):
            # the step lengths give time bounds (mid-step time -/+ half) and the totals' days
            # per step
            data["step_days"] = xr.Variable("time", dt, cf_attrs("d", "length of the time step"))
            data.update(with_time_bounds(data["time"], dt))
    if grid is not None:
        r = float(attrs["grid_resolution_deg"])
        data["lat"] = xr.Variable("lat", grid.lat, cf_attrs("degrees_north", "grid cell centre latitude",
                                                       standard_name="latitude", axis="Y"))
        data["lon"] = xr.Variable("lon", grid.lon, cf_attrs("degrees_east", "grid cell centre longitude",
                                                       standard_name="longitude", axis="X"))
        areas = row_areas(grid.lat, r)
        data["cell_area"] = xr.Variable(
            ("lat", "lon"), np.repeat(areas[:, None], grid.lon.size, 1),
            cf_attrs("m2", "area of the grid cell (sphere of radius EARTH_RADIUS_M)",
                standard_name="cell_area", earth_radius_m=EARTH_RADIUS_M))
        data["pixel_area"] = xr.Variable(
            "pixel", areas[grid.row], cf_attrs("m2", "area of the pixel's grid cell",
                                          standard_name="cell_area", earth_radius_m=EARTH_RADIUS_M))
        data["crs"] = xr.Variable((), np.int32(0), {
            "grid_mapping_name": "latitude_longitude", "semi_major_axis": EARTH_RADIUS_M,
            "inverse_flattening": 0.0, "long_name": "coordinate reference system (a sphere)"})
    return xr.Dataset(coords=data, attrs=attrs)


def output_chunk(input_chunk: int, target: int) -> int:
    """Output pixel chunk: the largest multiple of the input chunk not above ``target`` (at
    least one input chunk), so each output chunk covers whole input chunks."""
    return int(input_chunk) * max(1, int(target) // int(input_chunk))


def create_output(location: Location | str, store: PixelStore, series: Sequence[str],
                  attrs: dict[str, Any], chunk_pixels: int | None = None) -> None:
    """Write the empty output store (metadata, coordinates, empty arrays, markers all 0).

    Args:
      location: destination (nothing may be there; see ``pipeline.prepare_output``).
      store: the opened input store (pixels, time axis, chunking, grid).
      series: output series names (validated, store order).
      attrs: identity attributes (input store, checkpoint, config) added to the group's.
      chunk_pixels: target output chunk (see :func:`output_chunk`; default: the input's).
    """
    location = as_location(location)
    C = output_chunk(store.max_patch_size, chunk_pixels or store.max_patch_size)
    N, T = store.n_pixels, store.n_time
    n_chunks = max(1, math.ceil(N / C))
    grid = store_grid(store)
    group_attrs = {
        "differland_output_version": OUTPUT_VERSION,
        "title": f"DifferLand inference: {attrs.get('checkpoint', '')} over {store.url}",
        "Conventions": "CF-1.8",
        "source": "DifferLand: a neural network maps each pixel's predictors to the parameters "
                  "of the DALEC 993 carbon-water model, run over the input store's forcing",
        "history": f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} created by differland infer",
        "chunk_pixels": int(C),
        "input_chunk_pixels": int(store.max_patch_size),
        "n_chunks": int(n_chunks),
        "n_pixels": int(N),
        "n_time": int(T),
        "steps_per_year": int(store.steps_per_year),
        "grid_resolution_deg": float(store.attrs.get("grid_resolution_deg", 0) or 0),
        "has_maps": grid is not None,
        "series": list(series),
        "parameters": list(PARAM_NAMES),
        **attrs,
        **provenance.record(attrs.get("config_json")),
        "complete": False,
    }
    coords = _coords_dataset(store, grid, group_attrs)
    location.claim(OUTPUT_KIND, [
        ROOT_META, DONE, WRITTEN_AT, *(str(n) for n in coords.variables), *series,
        *(param_var(n) for n in PARAM_NAMES), *(map_var(n) for n in PARAM_NAMES if grid is not None)])
    zs = zarr_store(location, read_only=False)
    with quiet_zarr():
        # "a" into the folder that holds only our marker; "w" would first clear the folder, our ownership marker included
        coords.to_zarr(
            zs, mode="a", zarr_format=3, consolidated=False,
            encoding={"time": {"chunks": (T,)}})
        g = zarr.open_group(zs, mode="r+", zarr_format=3)
        for b in PARAMETERS:
            g.create_array(param_var(b.output_name), shape=(N,), chunks=(C,), dtype="float32",
                           fill_value=np.nan, dimension_names=("pixel",), attributes=parameter_attrs(b))
        for name in series:
            s = SERIES_BY_NAME[name]
            g.create_array(name, shape=(N, T), chunks=(C, T), dtype="float32", fill_value=np.nan,
                           dimension_names=("pixel", "time"),
                           attributes=series_attrs(s, grid is not None,
                                                     SITE_TIME if SITE_TIME in coords else ""))
        if grid is not None:
            chunks = (min(grid.lat.size, 360), min(grid.lon.size, 720))
            for b in PARAMETERS:
                g.create_array(map_var(b.output_name), shape=(grid.lat.size, grid.lon.size),
                               chunks=chunks, dtype="float32", fill_value=np.nan,
                               dimension_names=("lat", "lon"), attributes=parameter_map_attrs(b))
        g.create_array(DONE, shape=(n_chunks,), chunks=(1,), dtype="int8", fill_value=0,
                       dimension_names=("chunk",),
                       attributes=cf_attrs("1", f"1 = output pixel chunk k (pixels k*{C} .. "
                                      f"(k+1)*{C}-1) is completely written"))
        g.create_array(WRITTEN_AT, shape=(n_chunks,), chunks=(1,), dtype="float64",
                       fill_value=np.nan, dimension_names=("chunk",),
                       attributes=cf_attrs("s", "Unix time at which the chunk was committed"))
        zarr.consolidate_metadata(zs, zarr_format=3)
    log.info("created output %s: %d pixels x %d steps, %d series, %d chunks of %d pixels%s",
             location.url, N, T, len(series), n_chunks, C, "" if grid is None else
             f", maps {grid.lat.size}x{grid.lon.size}")


# -- opening, state ----------------------------------------------------------------------------
def read_attrs(location: Location | str) -> dict[str, Any] | None:
    """Group attributes of an inference output at ``location``; None if no zarr group is there.

    Raises DifferlandError if a zarr group is there but it is not an inference output."""
    location = as_location(location)
    url = location.url
    try:
        meta = json.loads(location.join(ROOT_META).read_bytes())  # retried, as every read
    except FileNotFoundError:
        return None
    attrs = meta.get("attributes", {}) or {}
    if "differland_output_version" not in attrs:
        raise DifferlandError(f"{url}: a zarr group is there but it is not a differland "
                              "inference output (no differland_output_version attribute)")
    return attrs


def open_output(location: Location | str, mode: str = "r") -> zarr.Group:
    """The output's zarr group (consolidated metadata)."""
    location = as_location(location)
    zs = zarr_store(location, read_only=(mode == "r"))
    with quiet_zarr():
        return zarr.open_group(zs, mode=mode, zarr_format=3, use_consolidated=True)


def done_chunks(group: zarr.Group) -> np.ndarray:
    """(n_chunks,) bool: which chunks are committed."""
    with quiet_zarr():
        return np.asarray(group[DONE][:]) == 1


def chunk_range(k0: int, k1: int, chunk_pixels: int, n_pixels: int) -> slice:
    """Pixels of chunks ``k0 .. k1-1``."""
    return slice(k0 * chunk_pixels, min(k1 * chunk_pixels, n_pixels))


def plan_tasks(done: np.ndarray, chunks_per_task: int) -> list[tuple[int, int]]:
    """Group the chunks not done into tasks ``(k0, k1)`` of consecutive chunks, at most
    ``chunks_per_task`` each (pure)."""
    tasks: list[tuple[int, int]] = []
    n = max(1, int(chunks_per_task))
    k, K = 0, len(done)
    while k < K:
        if done[k]:
            k += 1
            continue
        k1 = k
        while k1 < K and not done[k1] and k1 - k < n:
            k1 += 1
        tasks.append((k, k1))
        k = k1
    return tasks


class ChunkWriter:
    """Writes the results of whole output chunks (used inside the actors)."""

    def __init__(self, location: Location | str):
        self.group = open_output(location, mode="r+")
        self.attrs = dict(self.group.attrs)
        self.C = int(self.attrs["chunk_pixels"])
        self.N = int(self.attrs["n_pixels"])
        self._arrays: dict[str, zarr.Array] = {}

    def array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            with quiet_zarr():
                self._arrays[name] = self.group[name]
        return self._arrays[name]

    def write(self, k0: int, k1: int, params: np.ndarray, series: dict[str, np.ndarray],
              pool: Executor | None = None) -> None:
        """Write chunks ``k0..k1-1``: params (P, 40) and series name -> (P, T) (arrays written
        concurrently on ``pool`` when given); then commit the chunks (``chunk_written_at``,
        then ``chunk_done`` = 1, last)."""
        s = chunk_range(k0, k1, self.C, self.N)
        if params.shape[0] != s.stop - s.start:
            raise ValueError(f"chunks {k0}..{k1 - 1} hold {s.stop - s.start} pixels, got {params.shape[0]}")
        jobs = [(param_var(name), params[:, j]) for j, name in enumerate(PARAM_NAMES)]
        jobs += list(series.items())
        arrays = [(self.array(name), v) for name, v in jobs]

        def put(item):
            arr, v = item
            arr[s] = v

        for _ in (pool.map(put, arrays) if pool is not None else map(put, arrays)):
            pass
        self.array(WRITTEN_AT)[k0:k1] = time.time()
        self.array(DONE)[k0:k1] = 1


def finish(location: Location | str) -> None:
    """Write the gridded maps from the per-pixel parameters and set ``complete`` (last).

    Raises DifferlandError if a chunk is not committed."""
    location = as_location(location)
    url = location.url
    g = open_output(location, mode="r+")
    done = done_chunks(g)
    if not done.all():
        raise DifferlandError(f"{url}: {int((~done).sum())} chunk(s) not written; not complete")
    if g.attrs.get("has_maps"):
        with quiet_zarr():
            grid = Grid(np.asarray(g["lat"][:]), np.asarray(g["lon"][:]),
                        np.asarray(g["row"][:], np.int64), np.asarray(g["col"][:], np.int64))
            for name in PARAM_NAMES:
                g[map_var(name)][...] = to_grid(np.asarray(g[param_var(name)][:]), grid)
    g.attrs["complete"] = True  # the last write: root zarr.json, consolidated metadata kept
    log.info("output %s complete", url)


def remove_output(location: Location | str) -> None:
    """Delete an inference output: exactly the entries its ownership marker lists; refuses
    anything that is not one, or that holds files differland did not write."""
    location = as_location(location)
    read_attrs(location)  # raises if another zarr group is there
    location.clear_owned(OUTPUT_KIND)
