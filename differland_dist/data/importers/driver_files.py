"""The files of the paper's gridded global driver (DifferLand_Global layout) and how to read
them: file and variable names, the observation products, units, the grid, the masks and the
run index, the CO2 table, and the vegetation-type units. :mod:`.netcdf` builds the store from
them (its docstring describes the layout and the rules).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from differland_dist.common.progress import Progress
from differland_dist.data import schema
from differland_dist.data.importers import spans
from differland_dist.errors import DataValidationError, DifferlandError

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


class Stage:
    """Allocates the store's big arrays in memory, or as ``.npy`` memory maps in a directory."""

    def __init__(self, directory: str | None):
        self.directory = directory

    def empty(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        if self.directory is None:
            return np.empty(shape, dtype)
        return np.lib.format.open_memmap(os.path.join(self.directory, f"{name}.npy"), mode="w+",
                                         dtype=dtype, shape=shape)


def norm_units(u) -> str:
    return str(u).replace(" ", "").replace("^", "").replace("**", "").lower()


def conversion(path: Path, var: str, attrs: dict, store_units: str) -> tuple[float, float]:
    """(scale, offset) from a variable's units attribute to ``store_units`` (SIF: any)."""
    if "units" not in attrs or store_units not in UNIT_CONVERSIONS:
        return 1.0, 0.0
    table = UNIT_CONVERSIONS[store_units]
    u = norm_units(attrs["units"])
    if u not in table and norm_units(store_units) == u:
        return 1.0, 0.0
    if u not in table:
        raise DataValidationError([f"{var}: units {attrs['units']!r} not understood; expected "
                                   f"{store_units!r} or one of {', '.join(sorted(k for k in table if k))}"],
                                  source=str(path))
    scale, offset = table[u]
    if (scale, offset) != (1, 0):
        log.info("%s: %s in %r, converted to %s", path.name, var, attrs["units"], store_units)
    return float(scale), float(offset)


def open_netcdf(path: Path, what: str) -> xr.Dataset:
    if not path.is_file():
        raise DifferlandError(f"{path}: {what} not found")
    try:
        return xr.open_dataset(path, decode_times=False)
    except (OSError, ValueError) as e:
        raise DifferlandError(f"{path}: cannot open {what} as netCDF: {e}") from None


def coord_names(ds: xr.Dataset, path: Path) -> tuple[str, str]:
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


def grid_field(path: Path, var: str, shape: tuple[int, int], lat: np.ndarray, lon: np.ndarray,
             run: int | None = None) -> np.ndarray:
    """A (lat, lon) mask or index of a mask file, checked against the driver grid."""
    with open_netcdf(path, f"file of {var}") as ds:
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
            mlat, mlon = coord_names(ds, path)
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


def pft_to_fractions(ds: xr.Dataset, path: Path, raw: dict[str, np.ndarray],
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
            by_attr[n] = "percent" if norm_units(u) in PERCENT_UNITS else "fraction"
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


def as_bool(x: np.ndarray) -> np.ndarray:
    if x.dtype == bool:
        return x
    x = np.asarray(x, dtype=np.float64)
    return np.isfinite(x) & (x != 0)


class DriverGrid(NamedTuple):
    """The driver's regular grid and the months imported."""

    lat: np.ndarray         # (n_lat,) float64 coordinate
    lon: np.ndarray         # (n_lon,) float64 coordinate
    dims: tuple[str, str]   # names of the lat and lon dimensions
    n_time: int             # months imported (the first ones)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.lat.size, self.lon.size)


class PixelOrder(NamedTuple):
    """The store's pixels: kept cells in the published order, their patches and splits."""

    order: np.ndarray       # (P,) flat grid index of each store pixel
    sorted_idx: np.ndarray  # (P,) float64 batch index of the chosen run
    patch: np.ndarray       # (P,) patch id: one per distinct index value
    n_patch: int
    split: np.ndarray       # (P,) split code
    threshold: int          # largest index that trains
    run_table: np.ndarray   # (P, runs) float32 batch index of every run
    rows: np.ndarray        # (P,) grid row of each pixel
    cols: np.ndarray        # (P,) grid column of each pixel


class DriverReader:
    """Reads (time, lat, lon) variables of the driver at the store's pixels, staged, and names
    store pixels in messages."""

    def __init__(self, ds: xr.Dataset, path: Path, grid: DriverGrid, px: PixelOrder,
                 stage: Stage, n_reads: int):
        self.ds, self.path, self.grid, self.px, self.stage = ds, path, grid, px, stage
        self.reads = Progress(f"import-netcdf {path.name}: (time, lat, lon) variables read", n_reads)

    def where(self, pix: np.ndarray, tsteps: np.ndarray | None = None) -> str:
        """Names store pixels (and time steps) for a message: index range, grid cells."""
        g, rows, cols = self.grid, self.px.rows, self.px.cols
        pix = np.unique(pix)
        first = int(pix[0])
        txt = (f"pixels {spans(pix)} (first at lat {g.lat[rows[first]]:g}, lon "
               f"{g.lon[cols[first]]:g}: {g.dims[0]} index {rows[first]}, {g.dims[1]} index "
               f"{cols[first]})")
        if tsteps is not None:
            txt += f", time steps {spans(tsteps)}"
        return txt

    def temporal(self, var: str, name: str | None = None) -> np.ndarray:
        """(P, T) float32 of a (time, lat, lon) variable at the kept pixels, read in blocks
        of months; converted to the store units of ``name`` when given."""
        P, T, (n_lat, n_lon) = self.px.order.size, self.grid.n_time, self.grid.shape
        out = self.stage.empty(var, (P, T), np.float32)
        block = max(1, (16 << 20) // max(1, n_lat * n_lon))
        da = self.ds[var]
        for s in range(0, T, block):
            e = min(s + block, T)
            x = np.asarray(da[s:e].values).reshape(e - s, -1)
            out[:, s:e] = x[:, self.px.order].T
        self.reads.add()
        if name is not None:
            self.convert(out, var, schema.VARS[name].units)
        return out

    def convert(self, x: np.ndarray, var: str, units: str) -> None:
        """``x`` (values of ``var``) to ``units``, in place."""
        scale, offset = conversion(self.path, var, dict(self.ds[var].attrs), units)
        if (scale, offset) != (1.0, 0.0):
            x *= np.float32(scale)
            x += np.float32(offset)

    def same_for_all(self, var: str) -> np.ndarray:
        """(T,) float64 of a variable that must be the same at every pixel (DAYS, DOY)."""
        x = self.temporal(var)
        ref = np.asarray(x[0], np.float64)
        nan = np.argwhere(~np.isfinite(x))
        if nan.size:
            raise DataValidationError([f"{var}: {nan.shape[0]} missing value(s) (NaN) at "
                                       f"{self.where(nan[:, 0], nan[:, 1])}"], source=str(self.path))
        dev = np.abs(np.asarray(x, np.float64) - ref).max(axis=1)
        bad = np.flatnonzero(dev > 1e-3)
        if bad.size:
            raise DataValidationError([f"{var}: differs between pixels (the store holds one "
                                       f"series for every pixel): {self.where(bad)} differ from "
                                       f"pixel 0 by up to {dev.max():g}"], source=str(self.path))
        return ref

    def check_lat(self, lat_pix: np.ndarray) -> None:
        """LAT (when given) within half a cell of the latitude coordinate at every pixel."""
        lat_c = self.grid.lat
        half = 0.5 * (abs(lat_c[1] - lat_c[0]) if lat_c.size > 1 else 1.0) + 1e-4
        off = np.flatnonzero(np.abs(lat_pix - lat_c[self.px.rows]) > half)
        if off.size:
            raise DataValidationError([f"LAT differs from the {self.grid.dims[0]} coordinate by "
                                       f"more than half a cell at {off.size} pixel(s): "
                                       f"{self.where(off)}"], source=str(self.path))
