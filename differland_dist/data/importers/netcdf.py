"""Import the gridded global driver of the paper (DifferLand_Global layout) as a pixel store.

Input files (names of the published calibration, all on one regular lat/lon grid):

* ``differland_global_driver_v6.nc``: 1-D coordinates ``time``, ``lat``, ``lon``; static
  (lat, lon) variables LAT, MAT, MAP and the predictors (NF DBF EBF MF SH SAV GRA WET CRO NVG,
  elevation, canopy_height, tree_age_000_filled, BULK_DEN SAND SILT CLAY GRAVEL); monthly
  (time, lat, lon) forcing DAYS, DOY, T_min, T_max, SOLR, VPD, PREC, BURNED_AREA; observations
  LCSPP, NBE, LAI, LWE_normalized, agb_yan + bgb_yan, GFED_FIRE_EMISSION, initial_som (static),
  gpp_fluxnet / reco_fluxnet / et_fluxnet with ``<name>_weight``, ET, and the alternatives
  (:data:`PRODUCTS`);
* ``co2_mm_gl_01_23.csv``: NOAA global monthly CO2 (columns year, month, ..., average; ``#``
  comment lines allowed), taken from the month of the first DAYS on;
* ``era_valid_v6.nc``: ``era_valid`` (lat, lon) bool, pixels with valid meteorology;
* ``run_simulation_idx_v6.nc``: ``run_simulation_idx`` (run, lat, lon): per run, the batch index
  of every pixel (NaN = not used; negative = one of the paper's fixed test cells);
* ``assimilate_bulk_variable_v6.nc``: ``assimilate_bulk_variable`` (lat, lon) bool: where False,
  the NBE and GRACE water (ewt) labels are masked out.

As the published calibration and evaluation do for run r: pixels are kept where the run's index
is finite, ``era_valid`` is True and no chosen predictor (nor LAT, MAT, MAP) is NaN. Pixels with
an index >= 0 come first, sorted by index (stable, in the file's row-major lat/lon order); each
distinct index value is one batch of the published code and one patch here; indices <=
``round(0.9 * max index)`` train (split 0), the rest dev (split 1). Pixels with a negative
index are the paper's fixed test cells (split 2): they follow, sorted by index, one patch per
value, and are never trained on. Every run's index is stored as ``run_simulation_idx_runs``
(pixel, run), so ``data.run`` chooses a run's splits at open time (:mod:`..splits`).
Vegetation-type fractions given in percent (the paper's MODIS MCD12C1 layout; units attribute
``%``/``percent``, or values above 1) are divided by 100; ``attrs["pft_units_source"]`` records
what the file held. ``delta_t`` is 30 days for every month (the published DELTA_T), ``time`` = DAYS
and ``doy`` = DOY (both must be the same for every pixel), ``co2`` from the CSV. Product names:
the default product of each stream (``obs_sif`` = LCSPP, ``obs_nbe``, ``obs_lai``, ``obs_ewt`` =
LWE_normalized, ``obs_biomass`` = agb_yan + bgb_yan, ``obs_fire`` = GFED_FIRE_EMISSION,
``obs_som`` = initial_som (pixel,), ``obs_gpp_flux`` ..., ``obs_et_gleam`` = ET) and
alternatives such as ``obs_nbe_cams`` (see :data:`PRODUCTS`).

Big grids are staged in ``.npy`` memory maps in a scratch directory, so the import needs about
one variable's worth of memory, not the whole store's.
"""


from __future__ import annotations

import logging
import math
import os
import tempfile
import time as _time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import xarray as xr

from differland_dist.data import schema, splits
from differland_dist.data.importers import base_attrs, obs_variables, schema_var, spans
from differland_dist.data.importers.driver_files import (  # noqa: F401 - the names of the layout, used as nc.X
    BULK_FILE, BULK_STREAMS, BULK_VAR, CO2_FILE, DEFAULT_PREDICTOR_SETS, DELTA_T_DAYS,
    DRIVER_FILE, FORCING_VARS, PERCENT_UNITS, PREDICTOR_VARS, PRODUCTS, RUN_INDEX_FILE,
    RUN_INDEX_VAR, TRAIN_FRACTION, UNIT_CONVERSIONS, VALID_FILE, VALID_VAR, Inputs, Product,
    DriverGrid, DriverReader, PixelOrder, Stage, as_bool, conversion, coord_names, grid_field,
    open_netcdf, pft_to_fractions, read_co2)
from differland_dist.data.splits import RUN_TABLE_VAR, run_split_codes
from differland_dist.data.store import check_target, write_store
from differland_dist.errors import DataValidationError, DifferlandError
from differland_dist.storage.location import Location

log = logging.getLogger(__name__)

PREDICTOR_SET_NAMES = ("PFT", "CLIM", "AGE", "SOIL")


class Candidates(NamedTuple):
    """The grid cells a run may keep, flattened row-major (``cells`` = n_lat x n_lon)."""

    all_idx: np.ndarray         # (runs, cells) float32 batch index of every run
    idx: np.ndarray             # (cells,) float64 batch index of the chosen run
    keep: np.ndarray            # (cells,) bool: index, meteorology and every predictor there
    lat2d: np.ndarray           # (cells,) float64 latitude of each cell (LAT or the coordinate)
    lat_source: str             # the variable lat2d came from
    pred_raw: dict[str, np.ndarray]  # store predictor -> (cells,) float64 (PFT as fractions)
    pft_source: str | None      # "percent" or "fraction": what the file held
    bulk: np.ndarray            # (cells,) bool: NBE and ewt labels assimilated


def _check_arguments(predictor_sets: Sequence[str], skip_products: Sequence[str],
                     train_fraction: float) -> None:
    unknown_sets = [s for s in predictor_sets if s not in PREDICTOR_SET_NAMES]
    if unknown_sets:
        raise DifferlandError(f"predictor set(s) {unknown_sets} unknown; choose from PFT, CLIM, "
                              "AGE, SOIL")
    known = {p.product for p in PRODUCTS if p.default}
    bad_skip = [s for s in skip_products if s not in known]
    if bad_skip:
        raise DifferlandError(f"--skip-products: {bad_skip} not default products "
                              f"({', '.join(sorted(known))})")
    if not 0 < train_fraction <= 1:
        raise DifferlandError(f"train_fraction must be in (0, 1], got {train_fraction}")


def _driver_grid(ds: xr.Dataset, path: Path, n_time: int | None) -> DriverGrid:
    lat_name, lon_name = coord_names(ds, path)
    if "time" not in ds.dims:
        raise DataValidationError([f"no 'time' dimension; dimensions: {dict(ds.sizes)}"],
                                  source=str(path))
    T_file = int(ds.sizes["time"])
    T = T_file if n_time is None else int(n_time)
    if not 1 <= T <= T_file:
        raise DifferlandError(f"n_time {n_time}: the driver {path} has {T_file} time steps")
    return DriverGrid(np.asarray(ds[lat_name].values, np.float64),
                      np.asarray(ds[lon_name].values, np.float64), (lat_name, lon_name), T)


def _predictor_names(predictor_sets: Sequence[str]) -> list[str]:
    """MAT and MAP (they select pixels) and every predictor of the chosen sets."""
    return ["MAT", "MAP"] + [n for s in PREDICTOR_SET_NAMES if s in predictor_sets
                             for n in schema.PREDICTOR_SETS[s] if n not in ("MAT", "MAP")]


def _variables_of(p: Product) -> tuple[str, ...]:
    return p.sources + ((p.weight,) if p.weight else ())


def _choose_products(ds: xr.Dataset, skip_products: Sequence[str]) -> tuple[list[Product], list[str]]:
    """The default products not skipped and the alternatives the driver holds whole; problems
    of alternatives it holds in part."""
    products = [p for p in PRODUCTS if p.default and p.product not in skip_products]
    problems = []
    for p in PRODUCTS:
        if p.default:
            continue
        have = [v for v in _variables_of(p) if v in ds.variables]
        if len(have) == len(_variables_of(p)):
            products.append(p)
        elif have:
            problems.append(f"alternative product {p.product}: has {', '.join(have)} but "
                            f"not {', '.join(v for v in p.sources + (p.weight,) if v and v not in have)}")
    return products, problems


def _check_metadata(ds: xr.Dataset, path: Path, grid: DriverGrid, pred_names: list[str],
                    products: list[Product], problems: list[str]) -> None:
    """Every variable needed, with its dims, and the coordinates, before any data is read;
    DataValidationError listing every problem (``problems`` found before included)."""
    static_needed = [PREDICTOR_VARS[n] for n in pred_names]
    temporal_needed = ["DAYS", "DOY", *FORCING_VARS.values()]
    for p in products:
        (static_needed if p.static else temporal_needed).extend(_variables_of(p))
    obs_vars = {v for p in products for v in _variables_of(p)}
    gd, td = grid.dims, ("time", *grid.dims)
    for needed, dims in ((static_needed, gd), (temporal_needed, td)):
        missing = [v for v in dict.fromkeys(needed) if v not in ds.variables]
        if missing:
            hint = (" (default observations can be left out with --skip-products)"
                    if obs_vars & set(missing) else "")
            problems.append(f"variable(s) {', '.join(missing)} missing; expected each with "
                            f"dims {dims}{hint}")
    for needed, dims in ((static_needed, gd), (temporal_needed, td)):
        for v in dict.fromkeys(needed):
            if v in ds.variables and ds[v].dims != dims:
                problems.append(f"{v}: dims {ds[v].dims}, expected {dims}")
    if "LAT" in ds.variables and ds["LAT"].dims != gd:
        problems.append(f"LAT: dims {ds['LAT'].dims}, expected {gd}")
    for name, c, dim in (("lat", grid.lat, gd[0]), ("lon", grid.lon, gd[1])):
        spec = schema.VARS[name]
        problem = schema.out_of_range(dim, c, spec.lo, spec.hi, spec.units,
                                      lambda i: f"index {spans(i[:, 0])}",
                                      what="coordinate value(s)", missing=True)
        if problem:
            problems.append(problem)
        elif c.size > 1 and not (np.all(np.diff(c) > 0) or np.all(np.diff(c) < 0)):
            problems.append(f"{dim}: coordinate not strictly monotonic")
    if problems:
        raise DataValidationError(problems, source=str(path))


def _candidates(ds: xr.Dataset, path: Path, inputs: Inputs, grid: DriverGrid, run: int,
                pred_names: list[str], predictor_sets: Sequence[str]) -> Candidates:
    """The cells of run ``run``: a finite index, valid meteorology, a latitude and every chosen
    predictor (negative indices are the paper's fixed test cells: kept, never trained on)."""
    shape, lat_c, lon_c = grid.shape, grid.lat, grid.lon
    all_idx = grid_field(inputs.run_index, RUN_INDEX_VAR, shape, lat_c, lon_c, run=run)
    all_idx = all_idx.reshape(all_idx.shape[0], -1)
    idx = np.asarray(all_idx[min(run, all_idx.shape[0]) - 1], np.float64)
    valid = as_bool(grid_field(inputs.valid, VALID_VAR, shape, lat_c, lon_c)).ravel()
    bulk = as_bool(grid_field(inputs.bulk, BULK_VAR, shape, lat_c, lon_c)).ravel()
    lat_source = "LAT" if "LAT" in ds.variables else grid.dims[0]
    lat2d = (np.asarray(ds["LAT"].values, np.float64) if "LAT" in ds.variables
             else np.broadcast_to(lat_c[:, None], shape)).ravel()
    keep = np.isfinite(idx) & valid & np.isfinite(lat2d)
    n_candidates = int(keep.sum())
    pred_raw: dict[str, np.ndarray] = {}
    for n in pred_names:
        x = np.asarray(ds[PREDICTOR_VARS[n]].values, np.float64).ravel()
        pred_raw[n] = x
        keep &= np.isfinite(x)
    pft_source = pft_to_fractions(ds, path, pred_raw, keep) if "PFT" in predictor_sets else None
    log.info("run %d: %d pixel(s) with an index and valid meteorology, %d with every chosen "
             "predictor", run, n_candidates, int(keep.sum()))
    if not np.any(idx[keep] >= 0):
        raise DataValidationError([f"no pixel left for run {run}: {n_candidates} pixel(s) "
                                   f"have a finite index and era_valid, none of them an index "
                                   f">= 0 and a value in every predictor of "
                                   f"{list(predictor_sets)}"], source=str(path))
    return Candidates(all_idx, idx, keep, lat2d, lat_source, pred_raw, pft_source, bulk)


def _order_pixels(c: Candidates, grid: DriverGrid, run: int, max_patch_size: int,
                  train_fraction: float, index_file: Path) -> PixelOrder:
    """The published order: trainable cells sorted by index (stable), then the test cells;
    one patch per index value; indices <= round(train_fraction x max) train, above dev."""
    kept = np.flatnonzero(c.keep)
    idx = c.idx
    kept_trainable, kept_test = kept[idx[kept] >= 0], kept[idx[kept] < 0]
    order = np.concatenate([kept_trainable[np.argsort(idx[kept_trainable], kind="mergesort")],
                            kept_test[np.argsort(idx[kept_test], kind="mergesort")]])
    sorted_idx = idx[order]
    n_fit = kept_trainable.size
    v_fit, p_fit, c_fit = np.unique(sorted_idx[:n_fit], return_inverse=True, return_counts=True)
    v_test, p_test, c_test = np.unique(sorted_idx[n_fit:], return_inverse=True, return_counts=True)
    values = np.concatenate([v_fit, v_test])
    counts = np.concatenate([c_fit, c_test])
    patch = np.concatenate([p_fit.ravel(), p_test.ravel() + v_fit.size])
    big = np.flatnonzero(counts > max_patch_size)
    if big.size:
        listed = "; ".join(f"index {values[b]:g}: {counts[b]} pixels" for b in big[:8])
        raise DataValidationError([f"{RUN_INDEX_VAR} run {run}: {big.size} batch index "
                                   f"value(s) with more than max_patch_size={max_patch_size} "
                                   f"pixels: {listed}"], source=str(index_file))
    threshold = int(np.round(sorted_idx[:n_fit].max() * train_fraction))
    rows, cols = np.divmod(order, grid.shape[1])
    return PixelOrder(order, sorted_idx, patch, int(values.size),
                      run_split_codes(sorted_idx, threshold), threshold,
                      np.ascontiguousarray(c.all_idx[:, order].T), rows, cols)


def _time_axis(reader: DriverReader, co2_file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(days, doy, co2, "yyyy-mm" of the first month): DAYS and DOY the same at every pixel,
    DAYS increasing, co2 from the NOAA table from the month of the first DAYS on."""
    days = reader.same_for_all("DAYS")
    doy = reader.same_for_all("DOY")
    bad_t = np.flatnonzero(~(np.diff(days) > 0))
    if bad_t.size:
        raise DataValidationError([f"DAYS: not increasing at time step(s) "
                                   f"{spans(bad_t + 1)}"], source=str(reader.path))
    first_day = np.datetime64("2001-01-01", "D") + np.timedelta64(int(math.floor(days[0])), "D")
    y, m = int(str(first_day)[:4]), int(str(first_day)[5:7])
    return days, doy, read_co2(co2_file, y, m, reader.grid.n_time), f"{y}-{m:02d}"


def _forcing_variables(reader: DriverReader) -> dict[str, xr.Variable]:
    """The forcing, gap-free and within the schema's ranges."""
    data = {}
    for name, var in FORCING_VARS.items():
        x = reader.temporal(var, name)
        spec = schema.VARS[name]
        problems = []
        nan = np.argwhere(~np.isfinite(x))
        if nan.size:
            problems.append(f"{var}: {nan.shape[0]} missing value(s) (NaN) at "
                            f"{reader.where(nan[:, 0], nan[:, 1])}; forcing must be gap-free")
        problem = schema.out_of_range(var, x, spec.lo, spec.hi, spec.units,
                                      lambda i: reader.where(i[:, 0], i[:, 1]))
        if problem:
            problems.append(problem)
        if problems:
            raise DataValidationError(problems, source=str(reader.path))
        data[name] = schema_var(name, x, source_variable=var)
    return data


def _predictor_variables(reader: DriverReader, pred_names: list[str],
                         pred_raw: dict[str, np.ndarray]) -> dict[str, xr.Variable]:
    data = {}
    for n in pred_names:
        x = pred_raw[n][reader.px.order]
        spec = schema.VARS[n]
        problem = schema.out_of_range(PREDICTOR_VARS[n], x, spec.lo, spec.hi, spec.units,
                                      lambda i: reader.where(i[:, 0]))
        if problem:
            raise DataValidationError([problem], source=str(reader.path))
        data[n] = schema_var(n, x, source_variable=PREDICTOR_VARS[n])
    return data


def _product_value(reader: DriverReader, p: Product, units: str) -> np.ndarray:
    """The sum of a product's sources in ``units``: (P,) for static products, (P, T) staged
    otherwise; NaN in any source is a gap (as published)."""
    if p.static:
        value = np.zeros(reader.px.order.size, np.float64)
        for v in p.sources:
            scale, offset = conversion(reader.path, v, dict(reader.ds[v].attrs), units)
            value = value + (np.asarray(reader.ds[v].values, np.float64).ravel()[reader.px.order]
                             * scale + offset)
        return value.astype(np.float32)
    value = None
    for v in p.sources:
        x = reader.temporal(v, None)
        reader.convert(x, v, units)
        if value is None:
            value = x
        else:
            value += x
    return value


def _product_weight(reader: DriverReader, p: Product, value: np.ndarray) -> np.ndarray:
    """1 where observed (the published mask), staged like the values; a product's weight
    variable's positive values replace it."""
    weight = (np.isfinite(value).astype(np.float32) if p.static
              else reader.stage.empty(f"{p.product}_weight", value.shape, np.float32))
    if not p.static:
        np.copyto(weight, np.isfinite(value))
    if p.weight:
        w = reader.temporal(p.weight, None)
        pos = w > 0
        stray = int(np.count_nonzero(pos & ~np.isfinite(value)))
        if stray:
            log.warning("%s: %d element(s) with %s > 0 but no value: weight 0",
                        reader.path.name, stray, p.weight)
        np.copyto(weight, w, where=pos)
    return weight


def _observation_variables(reader: DriverReader, products: list[Product],
                           bulk_pix: np.ndarray) -> dict[str, xr.Variable]:
    """Value and weight of every product; NBE and ewt masked where not assimilated."""
    data = {}
    for p in products:
        st = schema.STREAMS[schema.STREAM_INDEX[p.stream]]
        value = _product_value(reader, p, st.units)
        weight = _product_weight(reader, p, value)
        if p.stream in BULK_STREAMS and not bulk_pix.all():
            off_pix = ~bulk_pix
            value[off_pix] = np.nan
            weight[off_pix] = 0.0
        finite = np.isfinite(value)
        problem = schema.out_of_range(" + ".join(p.sources), value, st.lo, st.hi, st.units,
                                      lambda i: reader.where(*i.T), stream=p.stream)
        if problem:
            raise DataValidationError([problem], source=str(reader.path))
        weight[~finite] = 0.0
        data.update(obs_variables(
            p.product, p.stream, value, weight, p.what or p.product,
            source_variables=list(p.sources),
            **({"weight_variable": p.weight} if p.weight else {}),
            **({"bulk_mask": f"masked out where {BULK_VAR} is False"}
               if p.stream in BULK_STREAMS else {})))
    return data


def _layout_variables(px: PixelOrder, run: int, doy: np.ndarray, co2: np.ndarray,
                      co2_file: Path, bulk_pix: np.ndarray) -> dict[str, xr.Variable]:
    """Patch, split, the time series, the run index (this run's and every run's), the bulk mask."""
    return {
        "patch": schema_var("patch", px.patch),
        "split": schema_var("split", px.split),
        "doy": schema_var("doy", doy, source_variable="DOY"),
        "delta_t": schema_var("delta_t", np.full(doy.size, DELTA_T_DAYS),
                              note="30 d for every month, as the published DELTA_T"),
        "co2": schema_var("co2", co2, source_file=co2_file.name),
        RUN_INDEX_VAR: xr.Variable("pixel", px.sorted_idx.astype(np.float32), {
            "units": "1", "long_name": f"batch index of run {run} (one patch per value; "
                                       "negative: test)"}),
        RUN_TABLE_VAR: xr.Variable(("pixel", "run"), px.run_table, {
            "units": "1", "long_name": f"{RUN_INDEX_VAR} of every run (column r-1 = run r; "
                                       "negative: test); data.run derives the splits from it"}),
        "assimilate_bulk": xr.Variable("pixel", bulk_pix.astype(np.int8), {
            "units": "1", "long_name": f"{BULK_VAR}: 0 = NBE and ewt labels masked out"}),
    }


def _coordinates(grid: DriverGrid, px: PixelOrder, days: np.ndarray, lat_pix: np.ndarray,
                 lat_source: str) -> dict[str, xr.Variable]:
    lat_c, lon_c, shape = grid.lat, grid.lon, grid.shape
    north_first = lat_c.size < 2 or lat_c[0] > lat_c[-1]
    west_first = lon_c.size < 2 or lon_c[0] < lon_c[-1]
    return {
        "time": schema_var("time", days, source_variable="DAYS"),
        "lat": schema_var("lat", lat_pix, source_variable=lat_source),
        "lon": schema_var("lon", lon_c[px.cols]),
        "row": schema_var("row", px.rows if north_first else shape[0] - 1 - px.rows),
        "col": schema_var("col", px.cols if west_first else shape[1] - 1 - px.cols),
    }


class RunChoice(NamedTuple):
    """What :func:`import_netcdf` was asked to import, as the attributes record it."""

    run: int
    predictor_sets: Sequence[str]
    max_patch_size: int
    train_fraction: float


def _attributes(inputs: Inputs, grid: DriverGrid, px: PixelOrder, choice: RunChoice,
                pft_source: str | None, products: list[Product], co2_start: str) -> dict:
    run, predictor_sets, max_patch_size, train_fraction = choice
    lat_c, lon_c, shape = grid.lat, grid.lon, grid.shape
    res = abs(float(lat_c[1] - lat_c[0])) if lat_c.size > 1 else (
        abs(float(lon_c[1] - lon_c[0])) if lon_c.size > 1 else 0.0)
    return base_attrs(
        title=f"DifferLand global driver {inputs.driver.name}, run {run} ({px.order.size} pixels, "
              f"{px.n_patch} patches, {grid.n_time} months)",
        source="netcdf", steps_per_year=12, max_patch_size=max_patch_size,
        grid_resolution_deg=res,
        grid_shape=[int(shape[0]), int(shape[1])],
        grid_origin="row 0 = northernmost, col 0 = westernmost cell of the driver grid",
        source_files={k: v.name for k, v in inputs._asdict().items()},
        run=int(run),
        runs=int(px.run_table.shape[1]),
        train_fraction=float(train_fraction),
        train_dev_threshold=px.threshold,
        split_rule=(f"{RUN_INDEX_VAR} < 0: test (2); <= round({train_fraction:g} x max index) = "
                    f"{px.threshold}: train (0); above: dev (1)"),
        **{splits.CONVENTION_ATTR: splits.CONVENTION},
        **({"pft_units_source": pft_source} if pft_source else {}),
        patch_rule="one patch per distinct run_simulation_idx value (a batch of the published "
                   "code), pixels sorted by index (stable, row-major grid order)",
        predictor_sets=list(predictor_sets),
        products={p.product: "+".join(p.sources) for p in products},
        delta_t="30 d every month (published DELTA_T)",
        co2_start=co2_start,
    )


def import_netcdf(inputs: Inputs, run: int = 1,
                  predictor_sets: Sequence[str] = DEFAULT_PREDICTOR_SETS,
                  n_time: int | None = None, max_patch_size: int = 320,
                  train_fraction: float = TRAIN_FRACTION, skip_products: Sequence[str] = (),
                  scratch_dir: str | None = None) -> xr.Dataset:
    """Build the store of the global driver as a Dataset (see the module docstring).

    Args:
      inputs: the five input files (:meth:`Inputs.in_dir`).
      run: which run of ``run_simulation_idx`` (1-based, as the published ``--run``).
      predictor_sets: sets of ``schema.PREDICTOR_SETS`` to import (PFT, CLIM, AGE, SOIL); pixels
        with NaN in any of their variables are left out, as in the published code.
      n_time: use the first ``n_time`` months (default: all of the driver's).
      max_patch_size: largest patch; a batch index value with more pixels is an error.
      train_fraction: indices 0..round(train_fraction * max index) train, larger ones dev
        (negative ones are test).
      skip_products: default products (e.g. ``"sif"``) not to import.
      scratch_dir: stage the big arrays as memory maps here (None: in memory); the directory
        must outlive the returned Dataset.

    Returns: a Dataset following :mod:`differland_dist.data.schema`.
    """
    t0 = _time.perf_counter()
    _check_arguments(predictor_sets, skip_products, train_fraction)
    path = inputs.driver
    with open_netcdf(path, "driver file") as ds:
        grid = _driver_grid(ds, path, n_time)
        pred_names = _predictor_names(predictor_sets)
        products, problems = _choose_products(ds, skip_products)
        _check_metadata(ds, path, grid, pred_names, products, problems)
        cand = _candidates(ds, path, inputs, grid, run, pred_names, predictor_sets)
        px = _order_pixels(cand, grid, run, max_patch_size, train_fraction, inputs.run_index)
        reader = DriverReader(ds, path, grid, px, Stage(scratch_dir), 2 + len(FORCING_VARS) + sum(
            (0 if p.static else len(p.sources)) + bool(p.weight) for p in products))
        lat_pix = cand.lat2d[px.order]
        reader.check_lat(lat_pix)
        days, doy, co2, co2_start = _time_axis(reader, inputs.co2)
        bulk_pix = cand.bulk[px.order]
        data = {**_forcing_variables(reader),
                **_predictor_variables(reader, pred_names, cand.pred_raw),
                **_observation_variables(reader, products, bulk_pix)}
    data.update(_layout_variables(px, run, doy, co2, inputs.co2, bulk_pix))
    out_ds = xr.Dataset(data, coords=_coordinates(grid, px, days, lat_pix, cand.lat_source),
                        attrs=_attributes(inputs, grid, px,
                                          RunChoice(run, predictor_sets, max_patch_size, train_fraction),
                                          cand.pft_source, products, co2_start))
    split, patch = px.split, px.patch
    log.info("global driver imported: %d pixels, %d patches (%d dev, %d test), %d months, %d "
             "products in %.1f s", px.order.size, px.n_patch,
             int(np.unique(patch[split == splits.DEV]).size),
             int(np.unique(patch[split == splits.TEST]).size), grid.n_time, len(products),
             _time.perf_counter() - t0)
    return out_ds


def estimate_bytes(inputs: Inputs) -> int:
    """Upper bound of the staged arrays' size: (grid cells x time x 4 bytes) per temporal
    variable of the driver (every cell kept)."""
    with open_netcdf(inputs.driver, "driver file") as ds:
        n = sum(int(np.prod(v.shape)) for v in ds.data_vars.values() if "time" in v.dims)
    return 4 * n


def netcdf_to_store(inputs: Inputs, where: Location | str, run: int = 1,
                    predictor_sets: Sequence[str] = DEFAULT_PREDICTOR_SETS,
                    n_time: int | None = None, max_patch_size: int = 320,
                    train_fraction: float = TRAIN_FRACTION, skip_products: Sequence[str] = (),
                    scratch_dir: str | None = None, memory_limit_bytes: int = 4 << 30,
                    overwrite: bool = False,
                    on_dataset: Callable[[xr.Dataset], None] | None = None) -> dict:
    """Import the global driver and write the store at ``where`` (complete flag last).

    The target is checked first. The arrays are staged as memory maps in a temporary directory
    (under ``scratch_dir``, or the system's) when ``scratch_dir`` is given or the driver's
    temporal data exceed ``memory_limit_bytes``; the directory is removed afterwards.
    ``on_dataset`` is called with the Dataset before it is written. Returns a summary dict.
    """
    check_target(where, overwrite=overwrite)
    use_disk = scratch_dir is not None or estimate_bytes(inputs) > memory_limit_bytes
    with ExitStack() as stack:
        tmp = None
        if use_disk:
            if scratch_dir is not None:
                os.makedirs(scratch_dir, exist_ok=True)
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="differland-import-",
                                                                  dir=scratch_dir))
            log.info("staging the arrays in %s", tmp)
        ds = import_netcdf(inputs, run=run, predictor_sets=predictor_sets, n_time=n_time,
                           max_patch_size=max_patch_size, train_fraction=train_fraction,
                           skip_products=skip_products, scratch_dir=tmp)
        if on_dataset is not None:
            on_dataset(ds)
        write_store(ds, where, overwrite=overwrite)
        summary = {"pixels": int(ds.sizes["pixel"]), "time": int(ds.sizes["time"]),
                   "patches": int(ds["patch"].values.max()) + 1,
                   "dev_pixels": int((ds["split"].values == splits.DEV).sum()),
                   "test_pixels": int((ds["split"].values == splits.TEST).sum()),
                   "runs": int(ds.sizes.get("run", 1)),
                   "pft_units_source": ds.attrs.get("pft_units_source"),
                   "products": sorted(ds.attrs["products"]), "staged_on_disk": bool(use_disk)}
        del ds
    return summary
