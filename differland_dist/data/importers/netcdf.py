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
import pandas as pd
import xarray as xr

from differland_dist.data import schema, splits
from differland_dist.data.splits import RUN_TABLE_VAR, run_split_codes
from differland_dist.data.importers import base_attrs, obs_variables, schema_var, spans
from differland_dist.data.store import check_target, write_store
from differland_dist.errors import DataValidationError, DifferlandError
from differland_dist.common.progress import Progress

log = logging.getLogger(__name__)

DRIVER_FILE = "differland_global_driver_v6.nc"
CO2_FILE = "co2_mm_gl_01_23.csv"
VALID_FILE, VALID_VAR = "era_valid_v6.nc", "era_valid"
RUN_INDEX_FILE, RUN_INDEX_VAR = "run_simulation_idx_v6.nc", "run_simulation_idx"
BULK_FILE, BULK_VAR = "assimilate_bulk_variable_v6.nc", "assimilate_bulk_variable"
#: The published DELTA_T (days) of every monthly step.
DELTA_T_DAYS = 30.0
#: Pixels below round(TRAIN_FRACTION * max index) train, the rest test (published rule).
TRAIN_FRACTION = 0.9

#: Store forcing -> driver variable, (time, lat, lon).
FORCING_VARS = {"t_min": "T_min", "t_max": "T_max", "swrad": "SOLR", "vpd": "VPD",
                "precip": "PREC", "burned_area": "BURNED_AREA"}
#: Store predictor -> driver variable, (lat, lon).
PREDICTOR_VARS = {**{n: n for n in schema.PREDICTOR_SETS["PFT"]}, "MAT": "MAT", "MAP": "MAP",
                  "elevation": "elevation", "canopy_height": "canopy_height",
                  "forest_age": "tree_age_000_filled", "BULK_DEN": "BULK_DEN", "SAND": "SAND",
                  "SILT": "SILT", "CLAY": "CLAY", "GRAVEL": "GRAVEL"}
DEFAULT_PREDICTOR_SETS = ("PFT", "CLIM", "AGE", "SOIL")
#: Streams whose labels the bulk-assimilation mask removes.
BULK_STREAMS = ("nbe", "ewt")


class Product(NamedTuple):
    """An observation product: the sum of ``sources``; ``weight``: a driver variable whose
    positive values replace the weight 1 of observed elements (fluxnet); ``static``: (lat, lon)."""

    product: str
    stream: str
    sources: tuple[str, ...]
    weight: str | None = None
    static: bool = False
    default: bool = True
    what: str = ""


PRODUCTS: tuple[Product, ...] = (
    Product("sif", "sif", ("LCSPP",), what="LCSPP (long-term continuous SIF proxy)"),
    Product("nbe", "nbe", ("NBE",), what="CMS-Flux atmospheric inversion NBE"),
    Product("lai", "lai", ("LAI",), what="MODIS LAI"),
    Product("ewt", "ewt", ("LWE_normalized",), what="GRACE water storage anomaly"),
    Product("biomass", "biomass", ("agb_yan", "bgb_yan"),
            what="annual above + below ground biomass (Xu et al. 2021)"),
    Product("fire", "fire", ("GFED_FIRE_EMISSION",), what="GFED fire carbon emission"),
    Product("som", "som", ("initial_som",), static=True,
            what="soil organic carbon (HWSD), static"),
    Product("gpp_flux", "gpp_flux", ("gpp_fluxnet",), "gpp_fluxnet_weight",
            what="FLUXNET GPP in cells whose site PFT covers > 25 %"),
    Product("reco_flux", "reco_flux", ("reco_fluxnet",), "reco_fluxnet_weight",
            what="FLUXNET RECO in cells whose site PFT covers > 25 %"),
    Product("et_flux", "et_flux", ("et_fluxnet",), "et_fluxnet_weight",
            what="FLUXNET ET in cells whose site PFT covers > 25 %"),
    Product("et_gleam", "et_gleam", ("ET",), what="GLEAM ET"),
    # alternatives: imported when present
    Product("nbe_cams", "nbe", ("CAMS_NBE",), default=False, what="CAMS inversion NBE"),
    Product("lai_copernicus", "lai", ("LAI_COPERNICUS",), default=False, what="Copernicus LAI"),
    Product("biomass_ib", "biomass", ("IB_AGC", "IB_BGC"), default=False,
            what="IB-AGC VOD-derived annual biomass (Li et al. 2025)"),
    Product("fire_cms", "fire", ("fire_emission",), default=False,
            what="CMS-based fire emission inversion"),
    *(Product(f"{s}_flux_{p}percent", f"{s}_flux", (f"{s}_fluxnet_{p}percent",),
              f"{s}_fluxnet_weight_{p}percent", default=False,
              what=f"FLUXNET {s.upper()} in cells whose site PFT covers > {p} %")
      for s in ("gpp", "reco", "et") for p in (10, 50)),
)

#: Accepted spellings of a driver variable's units attribute (lower case, no spaces) ->
#: (scale, offset) to the store units; keyed by the store units. No units attribute: taken
#: as already in store units.
UNIT_CONVERSIONS: dict[str, dict[str, tuple[float, float]]] = {
    "degC": {"degc": (1, 0), "c": (1, 0), "°c": (1, 0), "celsius": (1, 0), "degreesc": (1, 0),
             "k": (1, -273.15), "kelvin": (1, -273.15)},
    "MJ m-2 d-1": {"mjm-2d-1": (1, 0), "mj/m2/d": (1, 0), "mj/m2/day": (1, 0),
                   "mjm-2day-1": (1, 0), "wm-2": (0.0864, 0), "w/m2": (0.0864, 0)},
    "hPa": {"hpa": (1, 0), "kpa": (10, 0), "pa": (0.01, 0)},
    "mm d-1": {"mmd-1": (1, 0), "mm/d": (1, 0), "mm/day": (1, 0), "mmday-1": (1, 0),
               "kgm-2d-1": (1, 0)},
    "1": {"1": (1, 0), "": (1, 0), "fraction": (1, 0), "-": (1, 0), "%": (0.01, 0)},
    "gC m-2 d-1": {"gcm-2d-1": (1, 0), "gc/m2/d": (1, 0), "gc/m2/day": (1, 0),
                   "gcm-2day-1": (1, 0)},
    "m2 m-2": {"m2m-2": (1, 0), "m2/m2": (1, 0), "1": (1, 0)},
    "mm": {"mm": (1, 0), "cm": (10, 0), "m": (1000, 0), "kgm-2": (1, 0)},
    "gC m-2": {"gcm-2": (1, 0), "gc/m2": (1, 0), "kgcm-2": (1000, 0), "kgc/m2": (1000, 0),
               "mgc/ha": (100, 0), "mgcha-1": (100, 0)},
}


class Inputs(NamedTuple):
    """Paths of the five input files."""

    driver: Path
    co2: Path
    valid: Path
    run_index: Path
    bulk: Path

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike, driver=None, co2=None, valid=None,
               run_index=None, bulk=None) -> "Inputs":
        """The published file names in ``data_dir``, each replaceable by an explicit path."""
        d = Path(data_dir) if data_dir else Path(".")
        return cls(Path(driver or d / DRIVER_FILE), Path(co2 or d / CO2_FILE),
                   Path(valid or d / VALID_FILE), Path(run_index or d / RUN_INDEX_FILE),
                   Path(bulk or d / BULK_FILE))


class _Stage:
    """Allocates the store's big arrays in memory, or as ``.npy`` memory maps in a directory."""

    def __init__(self, directory: str | None):
        self.directory = directory

    def empty(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        if self.directory is None:
            return np.empty(shape, dtype)
        return np.lib.format.open_memmap(os.path.join(self.directory, f"{name}.npy"), mode="w+",
                                         dtype=dtype, shape=shape)


def _norm_units(u) -> str:
    return str(u).replace(" ", "").replace("^", "").replace("**", "").lower()


def _conversion(path: Path, var: str, attrs: dict, store_units: str) -> tuple[float, float]:
    """(scale, offset) from a variable's units attribute to ``store_units`` (SIF: any)."""
    if "units" not in attrs or store_units not in UNIT_CONVERSIONS:
        return 1.0, 0.0
    table = UNIT_CONVERSIONS[store_units]
    u = _norm_units(attrs["units"])
    if u not in table and _norm_units(store_units) == u:
        return 1.0, 0.0
    if u not in table:
        raise DataValidationError([f"{var}: units {attrs['units']!r} not understood; expected "
                                   f"{store_units!r} or one of {', '.join(sorted(k for k in table if k))}"],
                                  source=str(path))
    scale, offset = table[u]
    if (scale, offset) != (1, 0):
        log.info("%s: %s in %r, converted to %s", path.name, var, attrs["units"], store_units)
    return float(scale), float(offset)


def _open(path: Path, what: str) -> xr.Dataset:
    if not path.is_file():
        raise DifferlandError(f"{path}: {what} not found")
    try:
        return xr.open_dataset(path, decode_times=False)
    except (OSError, ValueError) as e:
        raise DifferlandError(f"{path}: cannot open {what} as netCDF: {e}") from None


def _coord_names(ds: xr.Dataset, path: Path) -> tuple[str, str]:
    """Names of the latitude and longitude coordinates."""
    found = []
    for options in (("lat", "latitude"), ("lon", "longitude")):
        name = next((n for n in options if n in ds.variables and ds[n].ndim == 1), None)
        if name is None:
            raise DataValidationError([f"no 1-D {options[0]} coordinate (looked for "
                                       f"{' or '.join(options)}); variables: "
                                       f"{', '.join(sorted(map(str, ds.variables)))}"], source=str(path))
        found.append(name)
    return found[0], found[1]


def read_co2(path: Path, year: int, month: int, n: int) -> np.ndarray:
    """``n`` monthly CO2 values (ppm) from the NOAA CSV, starting at ``year``-``month``."""
    if not path.is_file():
        raise DifferlandError(f"{path}: CO2 file not found")
    try:
        df = pd.read_csv(path, comment="#", skipinitialspace=True)
    except (ValueError, pd.errors.ParserError) as e:
        raise DifferlandError(f"{path}: cannot parse as CSV: {e}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in ("year", "month", "average") if c not in df.columns]
    if missing:
        raise DataValidationError([f"column(s) {missing} missing; columns: {list(df.columns)} "
                                   "(expected the NOAA monthly layout: year, month, decimal, "
                                   "average, ...)"], source=str(path))
    yr = pd.to_numeric(df["year"], errors="coerce").to_numpy()
    mo = pd.to_numeric(df["month"], errors="coerce").to_numpy()
    avg = pd.to_numeric(df["average"], errors="coerce").to_numpy(np.float64)
    start = np.flatnonzero((yr == year) & (mo == month))
    if start.size == 0:
        raise DataValidationError([f"no row for {year}-{month:02d}, the month of the first DAYS "
                                   f"of the driver (rows cover {int(np.nanmin(yr))}-"
                                   f"{int(np.nanmax(yr))})"], source=str(path))
    s = int(start[0])
    if s + n > len(df):
        raise DataValidationError([f"{len(df) - s} monthly row(s) from {year}-{month:02d} on, "
                                   f"the driver needs {n}"], source=str(path))
    months = (yr[s:s + n] * 12 + mo[s:s + n])
    if np.any(np.diff(months) != 1):
        i = int(np.flatnonzero(np.diff(months) != 1)[0])
        raise DataValidationError([f"rows are not consecutive months after line "
                                   f"{s + i + 2} ({int(yr[s + i])}-{int(mo[s + i]):02d})"], source=str(path))
    out = avg[s:s + n]
    spec = schema.VARS["co2"]
    problem = schema.out_of_range("average", out, spec.lo, spec.hi, spec.units,
                                  lambda i: f"rows {spans(s + i[:, 0] + 2)} of the months used",
                                  what="value(s) missing or", missing=True)
    if problem:
        raise DataValidationError([problem], source=str(path))
    return out


def _mask_2d(path: Path, var: str, shape: tuple[int, int], lat: np.ndarray, lon: np.ndarray,
             run: int | None = None) -> np.ndarray:
    """A (lat, lon) mask or index of a mask file, checked against the driver grid."""
    with _open(path, f"file of {var}") as ds:
        if var not in ds.variables:
            raise DataValidationError([f"variable {var} missing; variables: "
                                       f"{', '.join(sorted(map(str, ds.variables)))}"], source=str(path))
        da = ds[var]
        if run is not None and da.ndim == 3:
            n_runs = da.shape[0]
            if not 1 <= run <= n_runs:
                raise DataValidationError([f"{var}: run {run} asked for, the file holds runs "
                                           f"1..{n_runs} (dimension {da.dims[0]!r})"], source=str(path))
        if da.ndim != (3 if run is not None and da.ndim == 3 else 2) or tuple(da.shape[-2:]) != shape:
            raise DataValidationError([f"{var}: dims {da.dims} shape {tuple(da.shape)}, expected "
                                       f"(lat, lon) = {shape} as the driver"
                                       + (" (or (run, lat, lon))" if run is not None else "")],
                                      source=str(path))
        try:
            mlat, mlon = _coord_names(ds, path)
        except DataValidationError:
            mlat = mlon = None
        if mlat is not None:
            if ds[mlat].size != lat.size or not np.allclose(ds[mlat].values, lat, atol=1e-4):
                raise DataValidationError([f"{mlat}: the grid differs from the driver's "
                                           f"({ds[mlat].values[:3]}... vs {lat[:3]}...)"], source=str(path))
            if ds[mlon].size != lon.size or not np.allclose(ds[mlon].values, lon, atol=1e-4):
                raise DataValidationError([f"{mlon}: the grid differs from the driver's "
                                           f"({ds[mlon].values[:3]}... vs {lon[:3]}...)"], source=str(path))
        if run is not None:  # every run, (runs, lat, lon) float32 (one 2-D field: one run)
            x = np.asarray(da.values, np.float32)
            return x if x.ndim == 3 else x[None]
        return np.asarray(da.values)


#: Spellings of a percent units attribute (lower case, no spaces).
PERCENT_UNITS = ("%", "percent", "percentage", "pct")


def _pft_to_fractions(ds: xr.Dataset, path: Path, raw: dict[str, np.ndarray],
                      keep: np.ndarray) -> str:
    """Convert the vegetation-type predictors of ``raw`` to fractions in place; returns what the
    file held ("percent" or "fraction").

    The paper's driver holds MODIS MCD12C1 percentages (its SHAP conditions on ``NF > 80``):
    percent when a PFT variable's units attribute says so, or, without one, when any kept value
    exceeds 1. The ten variables must agree.
    """
    names = schema.PREDICTOR_SETS["PFT"]
    by_attr = {}
    for n in names:
        u = ds[PREDICTOR_VARS[n]].attrs.get("units")
        if u is not None:
            by_attr[n] = "percent" if _norm_units(u) in PERCENT_UNITS else "fraction"
    kinds = set(by_attr.values())
    if len(kinds) > 1:
        listed = ", ".join(f"{n}: {ds[PREDICTOR_VARS[n]].attrs['units']!r}" for n in by_attr)
        raise DataValidationError([f"PFT predictors disagree on their units ({listed}); "
                                   "expected all percent or all fractions"], source=str(path))
    top = max(float(np.max(raw[n][keep], initial=0.0)) for n in names)
    kind = kinds.pop() if kinds else ("percent" if top > 1.0 + 1e-6 else "fraction")
    hi = 100.0 if kind == "percent" else 1.0
    for n in names:
        x = raw[n]
        bad = np.flatnonzero(keep & ((x < 0) | (x > hi * (1 + 1e-6))))
        if bad.size:
            raise DataValidationError([f"{PREDICTOR_VARS[n]}: {bad.size} value(s) outside "
                                       f"[0, {hi:g}] ({kind}, "
                                       + ("from its units attribute" if by_attr else
                                          "judged from the values") +
                                       f") at grid cell(s) {spans(bad)} (flat lat x lon index; "
                                       f"actual max {x[bad].max():g})"], source=str(path))
        if kind == "percent":
            raw[n] = np.clip(x / 100.0, 0.0, 1.0)  # the schema's fractions
    if kind == "percent":
        log.info("%s: vegetation-type fractions in percent (%s), divided by 100", path.name,
                 "units attribute" if by_attr else f"values up to {top:g}")
    return kind


def _as_bool(x: np.ndarray) -> np.ndarray:
    if x.dtype == bool:
        return x
    x = np.asarray(x, dtype=np.float64)
    return np.isfinite(x) & (x != 0)


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
    stage = _Stage(scratch_dir)
    unknown_sets = [s for s in predictor_sets if s not in ("PFT", "CLIM", "AGE", "SOIL")]
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
    path = inputs.driver
    with ExitStack() as stack:
        ds = stack.enter_context(_open(path, "driver file"))
        lat_name, lon_name = _coord_names(ds, path)
        lat_c = np.asarray(ds[lat_name].values, np.float64)
        lon_c = np.asarray(ds[lon_name].values, np.float64)
        shape = (lat_c.size, lon_c.size)
        grid_dims = (lat_name, lon_name)
        tdim = "time"
        if tdim not in ds.dims:
            raise DataValidationError([f"no 'time' dimension; dimensions: {dict(ds.sizes)}"],
                                      source=str(path))
        T_file = int(ds.sizes[tdim])
        T = T_file if n_time is None else int(n_time)
        if not 1 <= T <= T_file:
            raise DifferlandError(f"n_time {n_time}: the driver {path} has {T_file} time steps")

        # -- metadata checks: every variable needed, with its dims, before reading data
        pred_names = ["MAT", "MAP"] + [n for s in ("PFT", "CLIM", "AGE", "SOIL")
                                       if s in predictor_sets for n in schema.PREDICTOR_SETS[s]
                                       if n not in ("MAT", "MAP")]
        static_needed = [PREDICTOR_VARS[n] for n in pred_names]
        temporal_needed = ["DAYS", "DOY", *FORCING_VARS.values()]
        products = [p for p in PRODUCTS if p.default and p.product not in skip_products]
        alternatives = []
        problems = []
        for p in PRODUCTS:
            if p.default:
                continue
            have = [v for v in p.sources + ((p.weight,) if p.weight else ()) if v in ds.variables]
            if len(have) == len(p.sources) + (1 if p.weight else 0):
                alternatives.append(p)
            elif have:
                problems.append(f"alternative product {p.product}: has {', '.join(have)} but "
                                f"not {', '.join(v for v in p.sources + (p.weight,) if v and v not in have)}")
        products += alternatives
        for p in products:
            for v in p.sources + ((p.weight,) if p.weight else ()):
                (static_needed if p.static else temporal_needed).append(v)
        obs_vars = {v for p in products for v in p.sources + ((p.weight,) if p.weight else ())}
        for needed, dims in ((static_needed, grid_dims), (temporal_needed, (tdim, *grid_dims))):
            missing = [v for v in dict.fromkeys(needed) if v not in ds.variables]
            if missing:
                hint = (" (default observations can be left out with --skip-products)"
                        if obs_vars & set(missing) else "")
                problems.append(f"variable(s) {', '.join(missing)} missing; expected each with "
                                f"dims {dims}{hint}")
        for v in dict.fromkeys(static_needed):
            if v in ds.variables and ds[v].dims != grid_dims:
                problems.append(f"{v}: dims {ds[v].dims}, expected {grid_dims}")
        for v in dict.fromkeys(temporal_needed):
            if v in ds.variables and ds[v].dims != (tdim, *grid_dims):
                problems.append(f"{v}: dims {ds[v].dims}, expected {(tdim, *grid_dims)}")
        if "LAT" in ds.variables and ds["LAT"].dims != grid_dims:
            problems.append(f"LAT: dims {ds['LAT'].dims}, expected {grid_dims}")
        for name, c in (("lat", lat_c), ("lon", lon_c)):
            spec = schema.VARS[name]
            problem = schema.out_of_range(grid_dims[0 if name == "lat" else 1], c, spec.lo,
                                          spec.hi, spec.units, lambda i: f"index {spans(i[:, 0])}",
                                          what="coordinate value(s)", missing=True)
            if problem:
                problems.append(problem)
            elif c.size > 1 and not (np.all(np.diff(c) > 0) or np.all(np.diff(c) < 0)):
                problems.append(f"{grid_dims[0 if name == 'lat' else 1]}: coordinate not "
                                "strictly monotonic")
        if problems:
            raise DataValidationError(problems, source=str(path))

        # -- the pixels of the run, in the published order (train and dev), then the test pixels
        all_idx = _mask_2d(inputs.run_index, RUN_INDEX_VAR, shape, lat_c, lon_c, run=run)
        all_idx = all_idx.reshape(all_idx.shape[0], -1)
        idx = np.asarray(all_idx[min(run, all_idx.shape[0]) - 1], np.float64)
        valid = _as_bool(_mask_2d(inputs.valid, VALID_VAR, shape, lat_c, lon_c)).ravel()
        bulk = _as_bool(_mask_2d(inputs.bulk, BULK_VAR, shape, lat_c, lon_c)).ravel()
        lat_source = "LAT" if "LAT" in ds.variables else lat_name
        lat2d = (np.asarray(ds["LAT"].values, np.float64) if "LAT" in ds.variables
                 else np.broadcast_to(lat_c[:, None], shape)).ravel()
        # negative indices are the paper's fixed test cells: kept (split 2), never trained on
        keep = np.isfinite(idx) & valid & np.isfinite(lat2d)
        n_candidates = int(keep.sum())
        pred_raw: dict[str, np.ndarray] = {}
        for n in pred_names:
            x = np.asarray(ds[PREDICTOR_VARS[n]].values, np.float64).ravel()
            pred_raw[n] = x
            keep &= np.isfinite(x)
        pft_source = None
        if "PFT" in predictor_sets:
            pft_source = _pft_to_fractions(ds, path, pred_raw, keep)
        log.info("run %d: %d pixel(s) with an index and valid meteorology, %d with every chosen "
                 "predictor", run, n_candidates, int(keep.sum()))
        kept = np.flatnonzero(keep)
        kept_trainable = kept[idx[kept] >= 0]
        if kept_trainable.size == 0:
            raise DataValidationError([f"no pixel left for run {run}: {n_candidates} pixel(s) "
                                       f"have a finite index and era_valid, none of them an index "
                                       f">= 0 and a value in every predictor of "
                                       f"{list(predictor_sets)}"], source=str(path))
        kept_test = kept[idx[kept] < 0]
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
                                       f"pixels: {listed}"], source=str(inputs.run_index))
        threshold = int(np.round(sorted_idx[:n_fit].max() * train_fraction))
        split = run_split_codes(sorted_idx, threshold)
        run_table = np.ascontiguousarray(all_idx[:, order].T)  # (pixel, run)
        rows, cols = np.divmod(order, shape[1])  # grid indices of the store's pixels
        P = order.size

        def where(pix: np.ndarray, tsteps: np.ndarray | None = None) -> str:
            """Names store pixels (and time steps) for a message: index range, grid cells."""
            pix = np.unique(pix)
            first = int(pix[0])
            txt = (f"pixels {spans(pix)} (first at lat {lat_c[rows[first]]:g}, lon "
                   f"{lon_c[cols[first]]:g}: {lat_name} index {rows[first]}, {lon_name} index "
                   f"{cols[first]})")
            if tsteps is not None:
                txt += f", time steps {spans(tsteps)}"
            return txt

        lat_pix = lat2d[order]
        half = 0.5 * (abs(lat_c[1] - lat_c[0]) if lat_c.size > 1 else 1.0) + 1e-4
        off = np.flatnonzero(np.abs(lat_pix - lat_c[rows]) > half)
        if off.size:
            raise DataValidationError([f"LAT differs from the {lat_name} coordinate by more "
                                       f"than half a cell at {off.size} pixel(s): {where(off)}"],
                                      source=str(path))

        # -- time
        reads = Progress(f"import-netcdf {path.name}: (time, lat, lon) variables read", 2 + len(
            FORCING_VARS) + sum((0 if p.static else len(p.sources)) + bool(p.weight) for p in products))

        def temporal(var: str, name: str | None = None) -> np.ndarray:
            """(P, T) float32 of a (time, lat, lon) variable at the kept pixels, read in blocks
            of months; converted to the store units of ``name`` when given."""
            out = stage.empty(var, (P, T), np.float32)
            block = max(1, (16 << 20) // max(1, shape[0] * shape[1]))
            da = ds[var]
            for s in range(0, T, block):
                e = min(s + block, T)
                x = np.asarray(da[s:e].values).reshape(e - s, -1)
                out[:, s:e] = x[:, order].T
            reads.add()
            if name is not None:
                scale, offset = _conversion(path, var, dict(da.attrs), schema.VARS[name].units)
                if (scale, offset) != (1.0, 0.0):
                    out *= np.float32(scale)
                    out += np.float32(offset)
            return out

        def same_for_all(var: str) -> np.ndarray:
            x = temporal(var)
            ref = np.asarray(x[0], np.float64)
            problems = []
            nan = np.argwhere(~np.isfinite(x))
            if nan.size:
                problems.append(f"{var}: {nan.shape[0]} missing value(s) (NaN) at "
                                f"{where(nan[:, 0], nan[:, 1])}")
            else:
                dev = np.abs(np.asarray(x, np.float64) - ref).max(axis=1)
                bad = np.flatnonzero(dev > 1e-3)
                if bad.size:
                    problems.append(f"{var}: differs between pixels (the store holds one series "
                                    f"for every pixel): {where(bad)} differ from pixel 0 by up "
                                    f"to {dev.max():g}")
            if problems:
                raise DataValidationError(problems, source=str(path))
            return ref

        days = same_for_all("DAYS")
        doy = same_for_all("DOY")
        bad_t = np.flatnonzero(~(np.diff(days) > 0))
        if bad_t.size:
            raise DataValidationError([f"DAYS: not increasing at time step(s) "
                                       f"{spans(bad_t + 1)}"], source=str(path))
        first_day = np.datetime64("2001-01-01", "D") + np.timedelta64(int(math.floor(days[0])), "D")
        y, m = int(str(first_day)[:4]), int(str(first_day)[5:7])
        co2 = read_co2(inputs.co2, y, m, T)

        # -- forcing
        data: dict[str, xr.Variable] = {}
        for name, var in FORCING_VARS.items():
            x = temporal(var, name)
            spec = schema.VARS[name]
            problems = []
            nan = np.argwhere(~np.isfinite(x))
            if nan.size:
                problems.append(f"{var}: {nan.shape[0]} missing value(s) (NaN) at "
                                f"{where(nan[:, 0], nan[:, 1])}; forcing must be gap-free")
            problem = schema.out_of_range(var, x, spec.lo, spec.hi, spec.units,
                                          lambda i: where(i[:, 0], i[:, 1]))
            if problem:
                problems.append(problem)
            if problems:
                raise DataValidationError(problems, source=str(path))
            data[name] = schema_var(name, x, source_variable=var)

        # -- predictors
        for n in pred_names:
            x = pred_raw[n][order]
            spec = schema.VARS[n]
            problem = schema.out_of_range(PREDICTOR_VARS[n], x, spec.lo, spec.hi, spec.units,
                                          lambda i: where(i[:, 0]))
            if problem:
                raise DataValidationError([problem], source=str(path))
            data[n] = schema_var(n, x, source_variable=PREDICTOR_VARS[n])

        # -- observations
        bulk_pix = bulk[order]
        for p in products:
            st = schema.STREAMS[schema.STREAM_INDEX[p.stream]]
            if p.static:
                value = np.zeros(P, np.float64)
                for v in p.sources:
                    scale, offset = _conversion(path, v, dict(ds[v].attrs), st.units)
                    value = value + (np.asarray(ds[v].values, np.float64).ravel()[order] * scale + offset)
                value = value.astype(np.float32)
            else:
                value = None
                for v in p.sources:
                    x = temporal(v, None)
                    scale, offset = _conversion(path, v, dict(ds[v].attrs), st.units)
                    if (scale, offset) != (1.0, 0.0):
                        x *= np.float32(scale)
                        x += np.float32(offset)
                    if value is None:
                        value = x
                    else:
                        value += x  # NaN in either source is a gap (as published)
            # weight 1 where observed (the published mask), staged like the values
            weight = (np.isfinite(value).astype(np.float32) if p.static
                      else stage.empty(f"{p.product}_weight", (P, T), np.float32))
            if not p.static:
                np.copyto(weight, np.isfinite(value))
            if p.weight:
                w = temporal(p.weight, None)
                pos = w > 0
                stray = int(np.count_nonzero(pos & ~np.isfinite(value)))
                if stray:
                    log.warning("%s: %d element(s) with %s > 0 but no value: weight 0",
                                path.name, stray, p.weight)
                np.copyto(weight, w, where=pos)
            if p.stream in BULK_STREAMS and not bulk_pix.all():
                off_pix = ~bulk_pix
                value[off_pix] = np.nan
                weight[off_pix] = 0.0
            finite = np.isfinite(value)
            problem = schema.out_of_range(" + ".join(p.sources), value, st.lo, st.hi, st.units,
                                          lambda i: where(*i.T), stream=p.stream)
            if problem:
                raise DataValidationError([problem], source=str(path))
            weight[~finite] = 0.0
            data.update(obs_variables(
                p.product, p.stream, value, weight, p.what or p.product,
                source_variables=list(p.sources),
                **({"weight_variable": p.weight} if p.weight else {}),
                **({"bulk_mask": f"masked out where {BULK_VAR} is False"}
                   if p.stream in BULK_STREAMS else {})))

    n_patch = int(values.size)
    data.update({
        "patch": schema_var("patch", patch),
        "split": schema_var("split", split),
        "doy": schema_var("doy", doy, source_variable="DOY"),
        "delta_t": schema_var("delta_t", np.full(T, DELTA_T_DAYS),
                              note="30 d for every month, as the published DELTA_T"),
        "co2": schema_var("co2", co2, source_file=inputs.co2.name),
        RUN_INDEX_VAR: xr.Variable("pixel", sorted_idx.astype(np.float32), {
            "units": "1", "long_name": f"batch index of run {run} (one patch per value; "
                                       "negative: test)"}),
        RUN_TABLE_VAR: xr.Variable(("pixel", "run"), run_table, {
            "units": "1", "long_name": f"{RUN_INDEX_VAR} of every run (column r-1 = run r; "
                                       "negative: test); data.run derives the splits from it"}),
        "assimilate_bulk": xr.Variable("pixel", bulk_pix.astype(np.int8), {
            "units": "1", "long_name": f"{BULK_VAR}: 0 = NBE and ewt labels masked out"}),
    })
    res = abs(float(lat_c[1] - lat_c[0])) if lat_c.size > 1 else (
        abs(float(lon_c[1] - lon_c[0])) if lon_c.size > 1 else 0.0)
    north_first = lat_c.size < 2 or lat_c[0] > lat_c[-1]
    west_first = lon_c.size < 2 or lon_c[0] < lon_c[-1]
    coords = {
        "time": schema_var("time", days, source_variable="DAYS"),
        "lat": schema_var("lat", lat_pix, source_variable=lat_source),
        "lon": schema_var("lon", lon_c[cols]),
        "row": schema_var("row", rows if north_first else shape[0] - 1 - rows),
        "col": schema_var("col", cols if west_first else shape[1] - 1 - cols),
    }
    attrs = base_attrs(
        title=f"DifferLand global driver {inputs.driver.name}, run {run} ({P} pixels, "
              f"{n_patch} patches, {T} months)",
        source="netcdf", steps_per_year=12, max_patch_size=max_patch_size,
        grid_resolution_deg=res,
        grid_shape=[int(shape[0]), int(shape[1])],
        grid_origin="row 0 = northernmost, col 0 = westernmost cell of the driver grid",
        source_files={k: v.name for k, v in inputs._asdict().items()},
        run=int(run),
        runs=int(run_table.shape[1]),
        train_fraction=float(train_fraction),
        train_dev_threshold=threshold,
        split_rule=(f"{RUN_INDEX_VAR} < 0: test (2); <= round({train_fraction:g} x max index) = "
                    f"{threshold}: train (0); above: dev (1)"),
        **{splits.CONVENTION_ATTR: splits.CONVENTION},
        **({"pft_units_source": pft_source} if pft_source else {}),
        patch_rule="one patch per distinct run_simulation_idx value (a batch of the published "
                   "code), pixels sorted by index (stable, row-major grid order)",
        predictor_sets=list(predictor_sets),
        products={p.product: "+".join(p.sources) for p in products},
        delta_t="30 d every month (published DELTA_T)",
        co2_start=f"{y}-{m:02d}",
    )
    out_ds = xr.Dataset(data, coords=coords, attrs=attrs)
    log.info("global driver imported: %d pixels, %d patches (%d dev, %d test), %d months, %d "
             "products in %.1f s", P, n_patch, int(np.unique(patch[split == splits.DEV]).size),
             int(np.unique(patch[split == splits.TEST]).size), T, len(products),
             _time.perf_counter() - t0)
    return out_ds


def estimate_bytes(inputs: Inputs) -> int:
    """Upper bound of the staged arrays' size: (grid cells x time x 4 bytes) per temporal
    variable of the driver (every cell kept)."""
    with _open(inputs.driver, "driver file") as ds:
        n = sum(int(np.prod(v.shape)) for v in ds.data_vars.values() if "time" in v.dims)
    return 4 * n


def netcdf_to_store(inputs: Inputs, url: str, run: int = 1,
                    predictor_sets: Sequence[str] = DEFAULT_PREDICTOR_SETS,
                    n_time: int | None = None, max_patch_size: int = 320,
                    train_fraction: float = TRAIN_FRACTION, skip_products: Sequence[str] = (),
                    scratch_dir: str | None = None, memory_limit_bytes: int = 4 << 30,
                    storage_options: dict | None = None, overwrite: bool = False,
                    on_dataset: Callable[[xr.Dataset], None] | None = None) -> dict:
    """Import the global driver and write the store at ``url`` (complete flag last).

    The target is checked first. The arrays are staged as memory maps in a temporary directory
    (under ``scratch_dir``, or the system's) when ``scratch_dir`` is given or the driver's
    temporal data exceed ``memory_limit_bytes``; the directory is removed afterwards.
    ``on_dataset`` is called with the Dataset before it is written. Returns a summary dict.
    """
    check_target(url, storage_options, overwrite)
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
        write_store(ds, url, storage_options=storage_options, overwrite=overwrite)
        summary = {"pixels": int(ds.sizes["pixel"]), "time": int(ds.sizes["time"]),
                   "patches": int(ds["patch"].values.max()) + 1,
                   "dev_pixels": int((ds["split"].values == splits.DEV).sum()),
                   "test_pixels": int((ds["split"].values == splits.TEST).sum()),
                   "runs": int(ds.sizes.get("run", 1)),
                   "pft_units_source": ds.attrs.get("pft_units_source"),
                   "products": sorted(ds.attrs["products"]), "staged_on_disk": bool(use_disk)}
        del ds
    return summary
