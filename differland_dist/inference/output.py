"""The inference output store: layout, creation, per-chunk completion markers and finishing.

One zarr v3 group, readable with ``xarray.open_zarr`` (times decode to datetimes):

Dimensions
  ``pixel``  the input store's land pixels, same order; ``time`` the input store's steps;
  ``lat``, ``lon`` the regular grid of the input store (gridded maps; absent for site stores);
  ``chunk``  the output's pixel chunks (completion bookkeeping).

Coordinates
  ``time`` (time) float64, CF ``days since 2001-01-01`` (decoded by xarray);
  ``pixel_lat``, ``pixel_lon`` (pixel) degrees; ``row``, ``col``, ``patch``, ``split`` (pixel)
  copied from the input store; ``lat`` (lat), ``lon`` (lon) grid cell centres.

Per-pixel parameters, (pixel,) float32, physical values with the parameter table's units:
  ``param_<name>`` for the 31 process parameters, ``param_Bday``, ``param_Fday`` and the
  initial pools ``param_init_<pool>`` (the same 40 names as a synthetic store's ``param``).

Gridded parameter maps, (lat, lon) float32, NaN off the land pixels: ``map_<same names>``.

Monthly series, (pixel, time) float32 (see :data:`SERIES`): ``gpp``, ``reco`` (= gpp + nee =
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
from typing import Any, NamedTuple, Sequence

import numpy as np
import xarray as xr
import zarr

from differland_dist.common import provenance
from differland_dist.vocabulary import streams as _streams
from differland_dist.data.store import PixelStore, quiet_zarr, resolve, zarr_store
from differland_dist.data.rows import with_retries
from differland_dist.errors import DifferlandError
from differland_dist.storage.location import Location
from differland_dist.model.parameters import (
    OUTPUT_UNITS, PHENOLOGY_PARAMETERS, POOLS, PROCESS_PARAMETERS)
from differland_dist.inference.site_time import SITE_TIME, site_times
from differland_dist.inference.time_bounds import with_time_bounds
from differland_dist.vocabulary.units import udunits  # also ``output.udunits``, where it lived

log = logging.getLogger(__name__)

OUTPUT_VERSION = 1
#: The ownership kind of an inference output (see :meth:`differland_dist.storage.location.Location.claim`).
OUTPUT_KIND = "inference-output"
ROOT_META = "zarr.json"
DONE = "chunk_done"
#: Per-pixel coordinates copied from the input store.
PIXEL_COORDS = ("pixel_lat", "pixel_lon", "row", "col", "patch", "split")
WRITTEN_AT = "chunk_written_at"


#: Earth radius of the cell areas: the authalic sphere (same surface as WGS84), m.
EARTH_RADIUS_M = 6371007.181


class SeriesSpec(NamedTuple):
    """A stored monthly series: the sum of model outputs (``parameters.OUTPUTS`` names);
    ``units`` UDUNITS-2, ``standard_name`` the CF name where one exists (else "")."""

    name: str
    sources: tuple[str, ...]
    units: str
    long_name: str
    standard_name: str = ""
    flux: bool = True  # a mean rate over the step (cell_methods "time: mean"); False: a state


_POOL_LONG = {b.name: b.description for b in POOLS}

_C_FLUX = "g m-2 d-1"  # OUTPUT_UNITS "gC m-2 d-1" as UDUNITS (carbon in the names)
_UP_CO2 = "surface_upward_mass_flux_of_carbon_dioxide_expressed_as_carbon_due_to_"
_POOL_STD = {"foliar": "leaf_mass_content_of_carbon", "root": "root_mass_content_of_carbon",
             "litter": "litter_mass_content_of_carbon", "som": "soil_mass_content_of_carbon"}

#: Every series the output can hold, in store order.
SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec("gpp", ("gpp",), udunits(OUTPUT_UNITS["gpp"]), "gross primary production, as carbon",
               "gross_primary_productivity_of_biomass_expressed_as_carbon"),
    SeriesSpec("reco", ("gpp", "nee"), udunits(OUTPUT_UNITS["nee"]),
               "ecosystem respiration (autotrophic + heterotrophic; gpp + nee), as carbon"),
    SeriesSpec("ra", ("respiration_auto",), udunits(OUTPUT_UNITS["respiration_auto"]),
               "autotrophic respiration, as carbon", _UP_CO2 + "plant_respiration"),
    SeriesSpec("rh", ("respiration_hetero_litter", "respiration_hetero_som"),
               udunits(OUTPUT_UNITS["respiration_hetero_som"]),
               "heterotrophic respiration (litter + SOM), as carbon", _UP_CO2 + "heterotrophic_respiration"),
    SeriesSpec("nee", ("nee",), udunits(OUTPUT_UNITS["nee"]),
               "net ecosystem exchange (positive: carbon to the atmosphere), as carbon"),
    SeriesSpec("nbe", ("nbe",), udunits(OUTPUT_UNITS["nbe"]),
               "net biosphere exchange (nee + fire; positive: carbon to the atmosphere), as carbon"),
    SeriesSpec("fire", ("total_fire_combust",), udunits(OUTPUT_UNITS["total_fire_combust"]),
               "carbon emitted by fire (total combustion), as carbon", _UP_CO2 + "emission_from_fires"),
    SeriesSpec("et", ("ET",), "kg m-2 d-1", "evapotranspiration (1 kg m-2 = 1 mm of water)",
               "water_evapotranspiration_flux"),
    SeriesSpec("lai", ("lai",), OUTPUT_UNITS["lai"], "leaf area index", "leaf_area_index", False),
    SeriesSpec("sif", ("SIF",), udunits(OUTPUT_UNITS["SIF"]),
               "solar-induced chlorophyll fluorescence proxy (linear in gpp)"),
    SeriesSpec("vod", ("vod",), OUTPUT_UNITS["vod"], "vegetation optical depth proxy", "", False),
    SeriesSpec("runoff", ("runoff",), "kg m-2 d-1", "runoff (1 kg m-2 = 1 mm of water)", "runoff_flux"),
    *(SeriesSpec(f"pool_{b.name}", (f"next_{b.name}_pool",), udunits(b.units),
                 f"{_POOL_LONG[b.name]} at the end of the step"
                 + (", as carbon" if b.units == "gC m-2" else ""), _POOL_STD.get(b.name, ""), False)
      for b in POOLS),
)
SERIES_BY_NAME = {s.name: s for s in SERIES}
DEFAULT_SERIES = tuple(s.name for s in SERIES)


def stream_series(outputs: Sequence[str]) -> tuple[str, ...]:
    """The stored series whose sum is the sum of these model outputs (an observation stream's
    model side, ``differland_dist.vocabulary.streams.Stream.outputs``): the one series with exactly these
    sources, else one single-source series per output, in order."""
    outputs = tuple(outputs)
    for s in SERIES:
        if s.sources == outputs:
            return (s.name,)
    names = []
    for o in outputs:
        match = [s.name for s in SERIES if s.sources == (o,)]
        if not match:
            raise ValueError(f"no stored series holds model output {o!r} alone: add one to SERIES")
        names.append(match[0])
    return tuple(names)


#: Every stream's model side is stored (checked at import: a new stream needs its series).
STREAM_SERIES = {st.name: stream_series(st.outputs) for st in _streams.STREAMS}

#: The 40 per-pixel parameters: (name, units, long name), in network-head order.
PARAMETERS: tuple[tuple[str, str, str], ...] = (
    *((b.name, udunits(b.units), b.description) for b in PROCESS_PARAMETERS),
    *((b.name, udunits(b.units), b.description) for b in PHENOLOGY_PARAMETERS),
    *((f"init_{b.name}", udunits(b.units), f"initial {b.description}") for b in POOLS),
)
PARAM_NAMES = tuple(p[0] for p in PARAMETERS)


def param_var(name: str) -> str:
    """Store variable of a per-pixel parameter, e.g. ``param_f_gpp``."""
    return f"param_{name}"


def map_var(name: str) -> str:
    """Store variable of a gridded parameter map, e.g. ``map_f_gpp``."""
    return f"map_{name}"


def check_series(names: Sequence[str]) -> tuple[str, ...]:
    """Validated series names in store order (raises DifferlandError naming unknown ones)."""
    unknown = [n for n in names if n not in SERIES_BY_NAME]
    if unknown:
        raise DifferlandError(f"unknown output series {unknown}; known: {', '.join(DEFAULT_SERIES)}")
    chosen = set(names)
    return tuple(s.name for s in SERIES if s.name in chosen)


def model_outputs_for(series: Sequence[str]) -> tuple[str, ...]:
    """The model outputs (``parameters.OUTPUTS`` names) the series need, de-duplicated."""
    return tuple(dict.fromkeys(src for n in series for src in SERIES_BY_NAME[n].sources))


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


# -- the grid -----------------------------------------------------------------------------------
class Grid(NamedTuple):
    """The regular grid of the input store: cell-centre coordinates and each pixel's cell."""

    lat: np.ndarray   # (n_lat,) float32, degrees_north (row 0 first)
    lon: np.ndarray   # (n_lon,) float32, degrees_east (column 0 first)
    row: np.ndarray   # (P,) int
    col: np.ndarray   # (P,) int


def store_grid(store: PixelStore) -> Grid | None:
    """The grid of a gridded store (``grid_resolution_deg`` > 0), None for point/site stores.

    Cell centres are fitted from the pixels (``lat = lat0 - row * r``, ``lon = lon0 + col * r``),
    so the grid's origin need not be 90 N / 180 W; the shape is ``attrs["grid_shape"]`` when
    present, else the pixels' row/column extent.
    """
    r = float(store.attrs.get("grid_resolution_deg", 0) or 0)
    if r <= 0:
        return None
    row = np.asarray(store.array("row")[:], np.int64)
    col = np.asarray(store.array("col")[:], np.int64)
    lat = np.asarray(store.array("lat")[:], np.float64)
    lon = np.asarray(store.array("lon")[:], np.float64)
    if row.size == 0:
        return None
    lat0 = float(np.median(lat + row * r))
    lon0 = float(np.median(lon - col * r))
    shape = store.attrs.get("grid_shape")
    n_lat, n_lon = (int(shape[0]), int(shape[1])) if shape else (int(row.max()) + 1, int(col.max()) + 1)
    if row.max() >= n_lat or col.max() >= n_lon or row.min() < 0 or col.min() < 0:
        raise DifferlandError(f"{store.url}: pixel rows/cols fall outside grid_shape {shape}")
    return Grid((lat0 - np.arange(n_lat) * r).astype(np.float32),
                (lon0 + np.arange(n_lon) * r).astype(np.float32), row, col)


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


# -- creation -----------------------------------------------------------------------------------
def _cf(units: str, long_name: str, **extra) -> dict[str, Any]:
    return {"units": units, "long_name": long_name, **extra}


def series_attrs(s: SeriesSpec, gridded: bool, site_time: bool = False) -> dict[str, Any]:
    """CF attributes of a stored series: units, long_name, standard_name (where one exists),
    cell_methods (fluxes are step means), auxiliary coordinates (each site's own time with
    ``site_time``) and the pixel's cell area."""
    a = _cf(s.units, s.long_name, model_outputs=" + ".join(s.sources),
            coordinates="pixel_lat pixel_lon" + (f" {SITE_TIME}" if site_time else ""))
    if s.standard_name:
        a["standard_name"] = s.standard_name
    if s.flux:
        a["cell_methods"] = "time: mean"
    if gridded:
        a["cell_measures"] = "area: pixel_area"
    return a


def _coords_dataset(store: PixelStore, grid: Grid | None, attrs: dict) -> xr.Dataset:
    """The small variables written eagerly: coordinates copied from the input store."""
    a = store.array
    tattrs = dict(a("time").attrs)
    time_units = tattrs.get("units", "days since 2001-01-01")
    data = {
        "time": xr.Variable("time", np.asarray(a("time")[:], np.float64),
                            _cf(time_units, "mid-step time", calendar="standard", standard_name="time",
                                axis="T")),
        "pixel_lat": xr.Variable("pixel", np.asarray(a("lat")[:], np.float32),
                                 _cf("degrees_north", "pixel centre latitude", standard_name="latitude")),
        "pixel_lon": xr.Variable("pixel", np.asarray(a("lon")[:], np.float32),
                                 _cf("degrees_east", "pixel centre longitude", standard_name="longitude")),
        "row": xr.Variable("pixel", np.asarray(a("row")[:], np.int32), _cf("1", "grid row of the pixel")),
        "col": xr.Variable("pixel", np.asarray(a("col")[:], np.int32), _cf("1", "grid column of the pixel")),
        "patch": xr.Variable("pixel", store.patch, _cf("1", "patch the pixel belongs to")),
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
            data["step_days"] = xr.Variable("time", dt, _cf("d", "length of the time step"))
            data.update(with_time_bounds(data["time"], dt))
    if grid is not None:
        r = float(attrs["grid_resolution_deg"])
        data["lat"] = xr.Variable("lat", grid.lat, _cf("degrees_north", "grid cell centre latitude",
                                                       standard_name="latitude", axis="Y"))
        data["lon"] = xr.Variable("lon", grid.lon, _cf("degrees_east", "grid cell centre longitude",
                                                       standard_name="longitude", axis="X"))
        areas = row_areas(grid.lat, r)
        data["cell_area"] = xr.Variable(
            ("lat", "lon"), np.repeat(areas[:, None], grid.lon.size, 1),
            _cf("m2", "area of the grid cell (sphere of radius EARTH_RADIUS_M)",
                standard_name="cell_area", earth_radius_m=EARTH_RADIUS_M))
        data["pixel_area"] = xr.Variable(
            "pixel", areas[grid.row], _cf("m2", "area of the pixel's grid cell",
                                          standard_name="cell_area", earth_radius_m=EARTH_RADIUS_M))
        data["crs"] = xr.Variable((), np.int32(0), {
            "grid_mapping_name": "latitude_longitude", "semi_major_axis": EARTH_RADIUS_M,
            "inverse_flattening": 0.0, "long_name": "coordinate reference system (a sphere)"})
    return xr.Dataset(coords=data, attrs=attrs)


def output_chunk(input_chunk: int, target: int) -> int:
    """Output pixel chunk: the largest multiple of the input chunk not above ``target`` (at
    least one input chunk), so each output chunk covers whole input chunks."""
    return int(input_chunk) * max(1, int(target) // int(input_chunk))


def create_output(url: str, store: PixelStore, series: Sequence[str], attrs: dict[str, Any],
                  storage_options: dict | None = None, chunk_pixels: int | None = None) -> None:
    """Write the empty output store (metadata, coordinates, empty arrays, markers all 0).

    Args:
      url: destination (nothing may be there; see :func:`prepare_output`).
      store: the opened input store (pixels, time axis, chunking, grid).
      series: output series names (validated, store order).
      attrs: identity attributes (input store, checkpoint, config) added to the group's.
      chunk_pixels: target output chunk (see :func:`output_chunk`; default: the input's).
    """
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
    Location(url, storage_options).claim(OUTPUT_KIND, [
        ROOT_META, DONE, WRITTEN_AT, *(str(n) for n in coords.variables), *series,
        *(param_var(n) for n in PARAM_NAMES), *(map_var(n) for n in PARAM_NAMES if grid is not None)])
    zs = zarr_store(Location(url, storage_options), read_only=False)
    with quiet_zarr():
        # "a" into the folder that holds only our marker; "w" would first clear the folder, our ownership marker included
        coords.to_zarr(
            zs, mode="a", zarr_format=3, consolidated=False,
            encoding={"time": {"chunks": (T,)}})
        g = zarr.open_group(zs, mode="r+", zarr_format=3)
        for name, units, long_name in PARAMETERS:
            g.create_array(param_var(name), shape=(N,), chunks=(C,), dtype="float32",
                           fill_value=np.nan, dimension_names=("pixel",),
                           attributes=_cf(units, long_name, coordinates="pixel_lat pixel_lon"))
        for name in series:
            s = SERIES_BY_NAME[name]
            g.create_array(name, shape=(N, T), chunks=(C, T), dtype="float32", fill_value=np.nan,
                           dimension_names=("pixel", "time"),
                           attributes=series_attrs(s, grid is not None, SITE_TIME in coords))
        if grid is not None:
            chunks = (min(grid.lat.size, 360), min(grid.lon.size, 720))
            for name, units, long_name in PARAMETERS:
                g.create_array(map_var(name), shape=(grid.lat.size, grid.lon.size), chunks=chunks,
                               dtype="float32", fill_value=np.nan, dimension_names=("lat", "lon"),
                               attributes=_cf(units, f"{long_name} (map)", grid_mapping="crs",
                                              cell_measures="area: cell_area"))
        g.create_array(DONE, shape=(n_chunks,), chunks=(1,), dtype="int8", fill_value=0,
                       dimension_names=("chunk",),
                       attributes=_cf("1", f"1 = output pixel chunk k (pixels k*{C} .. "
                                      f"(k+1)*{C}-1) is completely written"))
        g.create_array(WRITTEN_AT, shape=(n_chunks,), chunks=(1,), dtype="float64",
                       fill_value=np.nan, dimension_names=("chunk",),
                       attributes=_cf("s", "Unix time at which the chunk was committed"))
        zarr.consolidate_metadata(zs, zarr_format=3)
    log.info("created output %s: %d pixels x %d steps, %d series, %d chunks of %d pixels%s",
             url, N, T, len(series), n_chunks, C, "" if grid is None else
             f", maps {grid.lat.size}x{grid.lon.size}")


# -- opening, state ----------------------------------------------------------------------------
def read_attrs(url: str, storage_options: dict | None = None) -> dict[str, Any] | None:
    """Group attributes of an inference output at ``url``; None if no zarr group is there.

    Raises DifferlandError if a zarr group is there but it is not an inference output."""
    fs, root = resolve(Location(url, storage_options))
    try:
        meta = json.loads(fs.cat_file(f"{root}/{ROOT_META}"))
    except FileNotFoundError:
        return None
    attrs = meta.get("attributes", {}) or {}
    if "differland_output_version" not in attrs:
        raise DifferlandError(f"{url}: a zarr group is there but it is not a differland "
                              "inference output (no differland_output_version attribute)")
    return attrs


def open_output(url: str, storage_options: dict | None = None, mode: str = "r") -> zarr.Group:
    """The output's zarr group (consolidated metadata)."""
    zs = zarr_store(Location(url, storage_options), read_only=(mode == "r"))
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

    def __init__(self, url: str, storage_options: dict | None = None):
        self.group = open_output(url, storage_options, mode="r+")
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


def finish(url: str, storage_options: dict | None = None) -> None:
    """Write the gridded maps from the per-pixel parameters and set ``complete`` (last).

    Raises DifferlandError if a chunk is not committed."""
    g = open_output(url, storage_options, mode="r+")
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


def remove_output(url: str, storage_options: dict | None = None) -> None:
    """Delete an inference output: exactly the entries its ownership marker lists; refuses
    anything that is not one, or that holds files differland did not write."""
    read_attrs(url, storage_options)  # raises if another zarr group is there
    Location(url, storage_options).clear_owned(OUTPUT_KIND)
