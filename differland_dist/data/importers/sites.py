"""Import single-site driver files (the FLUXNET layout of DifferLand v1.0) as a pixel store.

Input: a directory with ``site_coords.csv`` (columns SITE_ID, cluster, lon, lat, ELEV, MAP, MAT,
IGBP, start_year, end_year) and one ``<SITE_ID>.nc`` per site: daily ``time`` (days since
2001-01-01, consecutive), ``DOY``, forcing T2M_MIN, T2M_MAX (degC), SSRD (MJ m-2 d-1), CO2
(ppm), VPD (hPa), TOTAL_PREC (mm d-1), optional BURNED_AREA (absent = 0), tower GPP, RECO, NBE
(net ecosystem exchange, positive = source; gC m-2 d-1), ET (mm d-1), satellite LAI (m2 m-2),
their ``*unc`` uncertainties and the scalar LAT.

The store (see docs/data.md, "Importers"):

* each site is one pixel and one patch (``patch`` = pixel index; ``max_patch_size`` 1); lat/lon
  from the CSV, ``row`` = site index, ``col`` = 0, ``grid_resolution_deg`` = 0;
* sites may cover different years: the ``time`` axis is the step index of each site's own
  series (step 0 = its first day or month). Where all sites share the calendar (or CO2), the
  per-step ``time``, ``doy``, ``delta_t`` and ``co2`` are simply theirs; where they differ, those
  (time,) variables hold pixel 0's values and ``<name>_by_pixel`` (pixel, time) hold every site's
  own (the reader must prefer them; group attribute ``per_pixel_forcing`` lists them);
* sites shorter than the longest are padded at the end (calendar continued, forcing copied
  from one year earlier, observation weights 0); ``valid_step`` (pixel, time) int8 marks real
  steps;
* observations: ``obs_gpp_flux``, ``obs_reco_flux``, ``obs_et_flux`` (tower), ``obs_lai``
  (satellite) and ``obs_nbe`` = tower NEE (stream ``nbe``: NBE = NEE without fire; each site
  is its own one-pixel patch, so the patch-level NBE term is a per-site term); weights 1 where
  observed and 0 at gaps, or 1/unc^2 normalised to mean 1 (``weights_from_unc``);
* predictors: the IGBP class one-hot in the ten PFT fractions (:data:`IGBP_TO_PFT`), MAT, MAP
  and elevation (ELEV) from the CSV; canopy height, forest age and soils are absent;
* the split is by time or by sites: without ``test_sites``, every ``split`` is 0 and
  ``time_test`` (pixel, time) int8 is 1 from January 1 of ``first year + ceil(n_years / 2)`` on
  (the published site experiments' time split); with ``test_sites``, those sites have split 2
  (test: never trained on or selected by), ``dev_sites`` split 1 (dev), and there is no
  ``time_test``; ``site_id``, ``site_cluster``, ``igbp`` (pixel,) strings;
* daily steps: ``time`` = the files' day index, ``doy`` = DOY, ``delta_t`` = 1; monthly steps
  (``monthly=True``): calendar months, forcing means (precipitation as mm d-1), observation
  means over valid days where at least ``min_valid_fraction`` of the month's days are valid
  (else a gap), ``time`` = mid-month (days since 2001-01-01), ``doy`` = mid-month day of year,
  ``delta_t`` = days in the month.
"""


from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from differland_dist.data import schema
from differland_dist.data.importers import spans
from differland_dist.data.importers.site_series import (  # noqa: F401 - the site table's names, used as sites.X
    COORDS_COLUMNS, COORDS_FILE, IGBP_TO_PFT, PFT_NAMES, REF_DAY, Series, Site)
from differland_dist.data.importers.site_store import sites_dataset
from differland_dist.data.store import check_target, write_store
from differland_dist.errors import DataValidationError, DifferlandError
from differland_dist.storage.location import Location

log = logging.getLogger(__name__)

#: Store forcing -> site file variable, and accepted spellings of its units attribute
#: (lower case, spaces removed; a variable without a units attribute is taken as documented).
FORCING_VARS: dict[str, tuple[str, tuple[str, ...]]] = {
    "t_min": ("T2M_MIN", ("degc", "c", "°c", "celsius")),
    "t_max": ("T2M_MAX", ("degc", "c", "°c", "celsius")),
    "swrad": ("SSRD", ("mj/m2/d", "mjm-2d-1", "mj/m2/day", "mjm-2day-1")),
    "co2": ("CO2", ("ppm", "ppmv", "umol/mol")),
    "vpd": ("VPD", ("hpa",)),
    "precip": ("TOTAL_PREC", ("mm/day", "mm/d", "mmd-1", "mmday-1")),
}
BURNED_AREA_VAR = "BURNED_AREA"
#: Product -> (site file variable, its uncertainty variable, stream, description).
OBS_VARS: dict[str, tuple[str, str, str, str]] = {
    "gpp_flux": ("GPP", "GPPunc", "gpp_flux", "tower gross primary production (FLUXNET2015)"),
    "reco_flux": ("RECO", "RECOunc", "reco_flux", "tower ecosystem respiration (FLUXNET2015)"),
    "et_flux": ("ET", "ETunc", "et_flux", "tower evapotranspiration (FLUXNET2015)"),
    "lai": ("LAI", "LAIunc", "lai", "satellite leaf area index, interpolated to days"),
    "nbe": ("NBE", "NBEunc", "nbe", "tower net ecosystem exchange NEE (FLUXNET2015), positive = "
            "source; stands for NBE (= NEE without fire) of the site's one-pixel patch"),
}


# -- the CSV ---------------------------------------------------------------------------------
def read_site_table(path: str | os.PathLike) -> list[Site]:
    """Read and check ``site_coords.csv``: columns, types, unique ids, value ranges."""
    path = Path(path)
    if not path.is_file():
        raise DifferlandError(f"{path}: site table not found (expected {COORDS_FILE} with "
                              f"columns {', '.join(COORDS_COLUMNS)})")
    try:
        df = pd.read_csv(path, dtype={"SITE_ID": str, "cluster": str, "IGBP": str},
                         skipinitialspace=True)
    except (ValueError, pd.errors.ParserError) as e:
        raise DifferlandError(f"{path}: cannot parse as CSV: {e}") from None
    missing = [c for c in COORDS_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError([f"column(s) {missing} missing; columns found: "
                                   f"{list(df.columns)}; expected {list(COORDS_COLUMNS)}"],
                                  source=str(path))
    problems = []
    sites = []
    for i, r in df.iterrows():
        line = int(i) + 2  # header is line 1
        sid = str(r["SITE_ID"]).strip() if pd.notna(r["SITE_ID"]) else ""
        label = f"line {line} ({sid or 'no SITE_ID'})"
        vals = {}
        for col in ("lon", "lat", "ELEV", "MAP", "MAT", "start_year", "end_year"):
            try:
                vals[col] = float(r[col])
            except (TypeError, ValueError):
                vals[col] = math.nan
            if not math.isfinite(vals[col]):
                problems.append(f"{label}: {col} is {r[col]!r}, expected a number")
        igbp = str(r["IGBP"]).strip().upper() if pd.notna(r["IGBP"]) else ""
        if not sid:
            problems.append(f"{label}: SITE_ID is empty")
        if igbp not in IGBP_TO_PFT:
            problems.append(f"{label}: IGBP class {r['IGBP']!r} unknown; expected one of "
                            f"{', '.join(IGBP_TO_PFT)}")
        if any(not math.isfinite(v) for v in vals.values()) or not sid:
            continue
        for col, name in (("lat", "lat"), ("lon", "lon"), ("ELEV", "elevation"),
                          ("MAP", "MAP"), ("MAT", "MAT")):
            spec = schema.VARS[name]
            problem = schema.out_of_range(f"{label}: {col}", vals[col], spec.lo, spec.hi,
                                          spec.units)
            if problem:
                problems.append(problem)
        if vals["end_year"] < vals["start_year"]:
            problems.append(f"{label}: end_year {vals['end_year']:g} before start_year "
                            f"{vals['start_year']:g}")
        sites.append(Site(sid, str(r["cluster"]).strip() if pd.notna(r["cluster"]) else "",
                          vals["lon"], vals["lat"], vals["ELEV"], vals["MAP"], vals["MAT"], igbp,
                          int(vals["start_year"]), int(vals["end_year"])))
    ids = [s.site_id for s in sites]
    dup = sorted({s for s in ids if ids.count(s) > 1})
    if dup:
        problems.append(f"SITE_ID(s) listed more than once: {', '.join(dup)}")
    if not sites and not problems:
        problems.append("no sites listed")
    if problems:
        raise DataValidationError(problems, source=str(path))
    return sites

# -- one site file ---------------------------------------------------------------------------
def _units_ok(attrs: dict, accepted: tuple[str, ...]) -> bool:
    u = attrs.get("units")
    return u is None or str(u).replace(" ", "").lower() in accepted


def _dates(idx: np.ndarray, start: np.ndarray) -> str:
    """Text naming steps ``idx`` of a series by their first days (``2003-01-04..2003-02-01``)."""
    idx = np.asarray(idx)
    if idx.size == 0:
        return "none"
    first, last = str(start[idx.min()]), str(start[idx.max()])
    return (f"{first}" if first == last else f"{first}..{last}") + f" (steps {spans(idx)})"


def _check_variables(ds: xr.Dataset, path: Path, site: Site, need_unc: bool) -> None:
    """time and every variable the layout needs (uncertainties when asked), along time."""
    needed = ["DOY", "LAT", *(v for v, _ in FORCING_VARS.values()),
              *(o[0] for o in OBS_VARS.values())]
    if need_unc:
        needed += [o[1] for o in OBS_VARS.values()]
    missing = [v for v in needed if v not in ds.variables]
    if "time" not in ds.variables:
        missing.insert(0, "time")
    if missing:
        raise DataValidationError([f"variable(s) {', '.join(missing)} missing (site "
                                   f"{site.site_id}); the site layout needs time, "
                                   f"{', '.join(needed)} (all along time but LAT)"],
                                  source=str(path))
    problems = [f"{v}: dims {ds[v].dims}, expected ('time',)" for v in needed
                if v != "LAT" and ds[v].dims != ("time",)]
    if problems:
        raise DataValidationError(problems, source=str(path))


def _day_axis(ds: xr.Dataset, path: Path) -> np.ndarray:
    """(T,) int64 day index: whole, consecutive days since 2001-01-01."""
    t = np.asarray(ds["time"].values)
    if t.ndim != 1 or t.size < 2 or not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
        raise DataValidationError([f"time: expected at least 2 whole days since 2001-01-01, "
                                   f"got {t.size} value(s) of dtype {t.dtype}"], source=str(path))
    t = t.astype(np.int64)
    step = np.diff(t)
    if np.any(step != 1):
        i = int(np.flatnonzero(step != 1)[0])
        raise DataValidationError([f"time: not consecutive days: {int(np.sum(step != 1))} "
                                   f"jump(s), first after step {i} (day {t[i]} then {t[i + 1]}); "
                                   "expected a daily series without gaps"], source=str(path))
    return t


def _check_calendar(ds: xr.Dataset, site: Site, start: np.ndarray, problems: list[str]) -> np.ndarray:
    """The day of year of each step; DOY, LAT and the years checked against the dates and the
    site table (problems appended)."""
    years = start.astype("datetime64[Y]").astype(np.int64) + 1970
    true_doy = (start - start.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64) + 1
    doy = np.asarray(ds["DOY"].values, dtype=np.float64)
    bad = np.flatnonzero(doy != true_doy)
    if bad.size:
        problems.append(f"DOY: {bad.size} value(s) disagree with the day of year of time at "
                        f"{_dates(bad, start)} (first: {doy[bad[0]]:g}, expected "
                        f"{true_doy[bad[0]]})")
    lat = float(np.asarray(ds["LAT"].values).ravel()[0])
    if not abs(lat - site.lat) <= 0.01:
        problems.append(f"LAT = {lat:g} but {COORDS_FILE} gives lat {site.lat:g} for "
                        f"{site.site_id}: the file is not this site (wrong SITE_ID in the CSV?)")
    if years[0] != site.start_year or years[-1] != site.end_year:
        problems.append(f"the file covers {start[0]}..{start[-1]} but {COORDS_FILE} gives "
                        f"years {site.start_year}..{site.end_year} for {site.site_id}")
    return true_doy


def _read_forcing(ds: xr.Dataset, start: np.ndarray, problems: list[str]) -> dict[str, np.ndarray]:
    """Store forcing name -> (T,) values (burned area 0 when absent); units, gaps and ranges
    checked (problems appended)."""
    forcing: dict[str, np.ndarray] = {}
    for name, (var, units) in FORCING_VARS.items():
        if not _units_ok(ds[var].attrs, units):
            problems.append(f"{var}: units {ds[var].attrs.get('units')!r}, expected "
                            f"{schema.VARS[name].units} (one of {', '.join(units)})")
        forcing[name] = np.asarray(ds[var].values, dtype=np.float64)
    if BURNED_AREA_VAR in ds.variables:
        forcing["burned_area"] = np.asarray(ds[BURNED_AREA_VAR].values, dtype=np.float64)
    else:
        forcing["burned_area"] = np.zeros(start.size)
    for name, x in forcing.items():
        var = FORCING_VARS[name][0] if name in FORCING_VARS else BURNED_AREA_VAR
        spec = schema.VARS[name]
        nan = np.flatnonzero(~np.isfinite(x))
        if nan.size:
            problems.append(f"{var}: {nan.size} missing value(s) (NaN) at "
                            f"{_dates(nan, start)}; forcing must be gap-free")
        problem = schema.out_of_range(var, x, spec.lo, spec.hi, spec.units,
                                      lambda i: _dates(i[:, 0], start))
        if problem:
            problems.append(problem)
    return forcing


def _read_obs(ds: xr.Dataset, start: np.ndarray, need_unc: bool, problems: list[str]
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(product -> values, product -> uncertainties when asked); ranges checked."""
    obs, unc = {}, {}
    for product, (var, uvar, stream, _) in OBS_VARS.items():
        st = schema.STREAMS[schema.STREAM_INDEX[stream]]
        x = np.asarray(ds[var].values, dtype=np.float64)
        problem = schema.out_of_range(var, x, st.lo, st.hi, st.units,
                                      lambda i: _dates(i[:, 0], start), stream=stream)
        if problem:
            problems.append(problem)
        obs[product] = x
        if need_unc:
            unc[product] = np.asarray(ds[uvar].values, dtype=np.float64)
    return obs, unc


def load_site(path: str | os.PathLike, site: Site, need_unc: bool = False) -> Series:
    """Read and check one site file (daily). Raises DataValidationError listing every problem:
    missing variables, bad time axis, DOY inconsistent with the dates, gaps (NaN) in forcing,
    values outside the schema ranges, coordinates or years disagreeing with the CSV."""
    path = Path(path)
    try:
        ds = xr.open_dataset(path, decode_times=False)
    except (OSError, ValueError) as e:
        raise DifferlandError(f"{path}: cannot open as netCDF: {e}") from None
    with ds:
        _check_variables(ds, path, site, need_unc)
        t = _day_axis(ds, path)
        start = REF_DAY + t.astype("timedelta64[D]")
        problems: list[str] = []
        true_doy = _check_calendar(ds, site, start, problems)
        forcing = _read_forcing(ds, start, problems)
        obs, unc = _read_obs(ds, start, need_unc, problems)
        if problems:
            raise DataValidationError(problems, source=str(path))
    return Series(site=site, path=path, days=t.astype(np.float64), doy=true_doy.astype(np.float64),
                  delta_t=np.ones(t.size), start=start, forcing=forcing, obs=obs, unc=unc)


# -- choosing and loading the sites ----------------------------------------------------------
def parse_ids(ids: Sequence[str] | str | None) -> list[str]:
    if ids is None:
        return []
    if isinstance(ids, str):
        ids = ids.split(",")
    return [i.strip() for i in ids if i and i.strip()]


def chosen_rows(table: list[Site], only: Sequence[str] | str | None, problems: list[str]) -> list[Site]:
    """The rows of the site ids ``only`` (every row when none), in table order; ids the table
    does not hold are appended to ``problems``. Both site importers choose their sites here."""
    wanted = parse_ids(only)
    if not wanted:
        return table
    by_id = [s.site_id for s in table]
    unknown = [w for w in wanted if w not in by_id]
    if unknown:
        problems.append(f"site(s) {', '.join(unknown)} asked for but not in {COORDS_FILE} "
                        f"(sites: {', '.join(by_id)})")
    return [s for s in table if s.site_id in set(wanted)]


def select_sites(sites_dir: str | os.PathLike, only: Sequence[str] | str | None = None
                 ) -> list[tuple[Site, Path]]:
    """The sites to import (CSV order) with their files; checks that files and rows match."""
    d = Path(sites_dir)
    if not d.is_dir():
        raise DifferlandError(f"{d}: sites directory not found")
    table = read_site_table(d / COORDS_FILE)
    files = {p.stem: p for p in sorted(d.glob("*.nc"))}
    problems: list[str] = []
    by_id = {s.site_id for s in table}
    if parse_ids(only):
        table = chosen_rows(table, only, problems)
    else:
        extra = sorted(set(files) - by_id)
        if extra:
            problems.append(f"file(s) {', '.join(f'{e}.nc' for e in extra)} have no row in "
                            f"{COORDS_FILE} (add them, or choose sites with --only)")
    no_file = [s.site_id for s in table if s.site_id not in files]
    if no_file:
        problems.append(f"site(s) {', '.join(no_file)} of {COORDS_FILE} have no file "
                        f"<SITE_ID>.nc in {d} (files: {', '.join(f'{f}.nc' for f in files) or 'none'})")
    if problems:
        raise DataValidationError(problems, source=str(d))
    return [(s, files[s.site_id]) for s in table]


def import_sites(sites_dir: str | os.PathLike, monthly: bool = False,
                 test_sites: Sequence[str] | str | None = None,
                 only: Sequence[str] | str | None = None, min_valid_fraction: float = 0.5,
                 weights_from_unc: bool = False,
                 dev_sites: Sequence[str] | str | None = None) -> xr.Dataset:
    """Build the site store as an in-memory Dataset (see the module docstring).

    Args:
      sites_dir: directory with ``site_coords.csv`` and ``<SITE_ID>.nc`` files.
      monthly: aggregate the daily files to calendar months.
      test_sites, dev_sites: site ids whose ``split`` is 2 (test) or 1 (dev), for
        leave-sites-out experiments; the rest are 0 (train). Without them the split is by time
        (``time_test``).
      only: import just these sites (default: every row of the CSV, each with its file).
      min_valid_fraction: (monthly) share of a month's days an observation needs.
      weights_from_unc: weights 1/unc^2 (normalised to mean 1 per product) instead of 1.

    Returns: a Dataset following :mod:`differland_dist.data.schema`, pixels = sites.
    """
    check_min_valid_fraction(min_valid_fraction)
    chosen = select_sites(sites_dir, only)
    ids = [s.site_id for s, _ in chosen]
    test, dev = check_held_out(ids, test_sites, dev_sites)
    series = load_every_site(chosen, lambda site, path: load_site(path, site, need_unc=weights_from_unc),
                             sites_dir)
    return sites_dataset(series, monthly=monthly, test=test, dev=dev,
                         min_valid_fraction=min_valid_fraction, weights_from_unc=weights_from_unc,
                         source="fluxnet_sites", obs_vars=OBS_VARS,
                         source_files=[COORDS_FILE] + [f"{i}.nc" for i in ids])


def check_min_valid_fraction(min_valid_fraction: float) -> None:
    if not 0.0 < min_valid_fraction <= 1.0:
        raise DifferlandError(f"min_valid_fraction must be in (0, 1], got {min_valid_fraction}")


def check_held_out(ids: Sequence[str], test_sites: Sequence[str] | str | None,
                   dev_sites: Sequence[str] | str | None) -> tuple[list[str], list[str]]:
    """The test and dev site ids, checked against the imported ``ids`` (DifferlandError
    naming unknown or doubly named sites)."""
    test, dev = parse_ids(test_sites), parse_ids(dev_sites)
    for flag, chosen_ids in (("--test-sites", test), ("--dev-sites", dev)):
        unknown = [t for t in chosen_ids if t not in ids]
        if unknown:
            raise DifferlandError(f"{flag}: {', '.join(unknown)} not among the imported sites "
                                  f"({', '.join(ids)})")
    both = sorted(set(test) & set(dev))
    if both:
        raise DifferlandError(f"--test-sites and --dev-sites both name {', '.join(both)}")
    return test, dev


def load_every_site(chosen: list[tuple[Site, Path]], load: Callable[[Site, Path], Series],
                    source: str | os.PathLike) -> list[Series]:
    """``load(site, path)`` of every chosen site, all checked before anything is built: one
    DataValidationError listing every file's problems (each named by file and site)."""
    series, problems = [], []
    for site, path in chosen:
        try:
            series.append(load(site, path))
        except DataValidationError as e:
            problems += [f"{path.name} (site {site.site_id}): {p}" for p in e.problems]
    if problems:
        raise DataValidationError(problems, source=str(source))
    return series



def sites_to_store(sites_dir: str | os.PathLike, where: Location | str, monthly: bool = False,
                   test_sites: Sequence[str] | str | None = None,
                   only: Sequence[str] | str | None = None, min_valid_fraction: float = 0.5,
                   weights_from_unc: bool = False,
                   overwrite: bool = False, dev_sites: Sequence[str] | str | None = None) -> xr.Dataset:
    """Import the sites and write the store at ``where`` (complete flag last). Returns the
    Dataset. The target is checked first, before any file is read."""
    check_target(where, overwrite=overwrite)
    ds = import_sites(sites_dir, monthly=monthly, test_sites=test_sites, only=only,
                      min_valid_fraction=min_valid_fraction, weights_from_unc=weights_from_unc,
                      dev_sites=dev_sites)
    write_store(ds, where, overwrite=overwrite)
    return ds
