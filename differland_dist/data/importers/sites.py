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
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from differland_dist.data import schema, splits
from differland_dist.data.importers import base_attrs, obs_variables, schema_var, spans
from differland_dist.data.schema import PER_PIXEL_FORCING, by_pixel_name
from differland_dist.data.site_predictors import site_onehot
from differland_dist.data.store import check_target, write_store
from differland_dist.errors import DataValidationError, DifferlandError

log = logging.getLogger(__name__)

COORDS_FILE = "site_coords.csv"
COORDS_COLUMNS = ("SITE_ID", "cluster", "lon", "lat", "ELEV", "MAP", "MAT", "IGBP",
                  "start_year", "end_year")
#: IGBP class -> PFT predictor (the 17 IGBP classes; others are refused).
IGBP_TO_PFT: dict[str, str] = {
    "ENF": "NF", "DNF": "NF", "DBF": "DBF", "EBF": "EBF", "MF": "MF",
    "OSH": "SH", "CSH": "SH", "WSA": "SAV", "SAV": "SAV", "GRA": "GRA", "WET": "WET",
    "CRO": "CRO", "CVM": "CRO",
    "URB": "NVG", "SNO": "NVG", "BSV": "NVG", "WAT": "NVG",
}
PFT_NAMES = schema.PREDICTOR_SETS["PFT"]
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
_REF = np.datetime64("2001-01-01", "D")


@dataclass
class Site:
    """One row of site_coords.csv."""

    site_id: str
    cluster: str
    lon: float
    lat: float
    elev: float
    map: float
    mat: float
    igbp: str
    start_year: int
    end_year: int


@dataclass
class Series:
    """One site's steps (daily as read, or aggregated to months), all arrays (T,).

    days: float64 days since 2001-01-01 (daily: the file's day index; monthly: mid-month);
    doy: day of year; delta_t: step length (d); start: datetime64[D] first day of each step;
    forcing: store forcing name -> values; obs / unc: product -> values (NaN = gap).
    """

    site: Site
    path: Path
    days: np.ndarray
    doy: np.ndarray
    delta_t: np.ndarray
    start: np.ndarray
    forcing: dict[str, np.ndarray]
    obs: dict[str, np.ndarray]
    unc: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.days.size)


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
        problems: list[str] = []
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
        for v in needed:
            if v != "LAT" and ds[v].dims != ("time",):
                problems.append(f"{v}: dims {ds[v].dims}, expected ('time',)")
        if problems:
            raise DataValidationError(problems, source=str(path))
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
        start = _REF + t.astype("timedelta64[D]")
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
        forcing: dict[str, np.ndarray] = {}
        for name, (var, units) in FORCING_VARS.items():
            if not _units_ok(ds[var].attrs, units):
                problems.append(f"{var}: units {ds[var].attrs.get('units')!r}, expected "
                                f"{schema.VARS[name].units} (one of {', '.join(units)})")
            forcing[name] = np.asarray(ds[var].values, dtype=np.float64)
        if BURNED_AREA_VAR in ds.variables:
            forcing["burned_area"] = np.asarray(ds[BURNED_AREA_VAR].values, dtype=np.float64)
        else:
            forcing["burned_area"] = np.zeros(t.size)
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
        if problems:
            raise DataValidationError(problems, source=str(path))
    return Series(site=site, path=path, days=t.astype(np.float64), doy=true_doy.astype(np.float64),
                  delta_t=np.ones(t.size), start=start, forcing=forcing, obs=obs, unc=unc)


# -- months ----------------------------------------------------------------------------------
def month_axis(months: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For datetime64[M] months: (first day datetime64[D], mid-month days since 2001-01-01,
    mid-month day of year, days in the month)."""
    first = months.astype("datetime64[D]")
    n = ((months + 1).astype("datetime64[D]") - first).astype(np.float64)
    jan1 = months.astype("datetime64[Y]").astype("datetime64[D]")
    mid = (first - _REF).astype(np.float64) + n / 2.0
    doy = (first - jan1).astype(np.float64) + n / 2.0 + 1.0
    return first, mid, doy, n


def aggregate_monthly(s: Series, min_valid_fraction: float = 0.5) -> Series:
    """Calendar months of a daily series: forcing means over the days present; observation
    means over valid days where valid days >= ``min_valid_fraction`` x days in the month, else
    NaN; uncertainties: mean over the same valid days."""
    months = s.start.astype("datetime64[M]")
    cut = np.r_[0, np.flatnonzero(months[1:] != months[:-1]) + 1]
    m = months[cut]
    first, mid, doy, n_days = month_axis(m)
    present = np.diff(np.r_[cut, months.size]).astype(np.float64)
    forcing = {k: np.add.reduceat(v, cut) / present for k, v in s.forcing.items()}
    obs, unc = {}, {}
    for k, v in s.obs.items():
        ok = np.isfinite(v)
        count = np.add.reduceat(ok.astype(np.float64), cut)
        total = np.add.reduceat(np.where(ok, v, 0.0), cut)
        enough = count >= min_valid_fraction * n_days
        with np.errstate(invalid="ignore", divide="ignore"):
            obs[k] = np.where(enough & (count > 0), total / count, np.nan)
            if k in s.unc:
                u = s.unc[k]
                uok = ok & np.isfinite(u)
                ucount = np.add.reduceat(uok.astype(np.float64), cut)
                utotal = np.add.reduceat(np.where(uok, u, 0.0), cut)
                unc[k] = np.where(enough & (ucount > 0), utotal / ucount, np.nan)
    partial = np.flatnonzero(present < n_days)
    if partial.size:
        log.info("%s: month(s) %s only partly covered by the file (forcing averaged over the "
                 "days present)", s.site.site_id, ", ".join(str(m[i]) for i in partial))
    return Series(site=s.site, path=s.path, days=mid, doy=doy, delta_t=n_days, start=first,
                  forcing=forcing, obs=obs, unc=unc)


# -- assembling the store ----------------------------------------------------------------------
def _pad(s: Series, T: int, monthly: bool) -> tuple[Series, np.ndarray]:
    """Extend a series to T steps: calendar continued, forcing copied from one year (365 days /
    12 months) earlier (or the last step), observations NaN. Returns it and the (T,) real-step
    mask."""
    n = s.n
    valid = np.zeros(T, bool)
    valid[:n] = True
    if n == T:
        return s, valid
    extra = T - n
    if monthly:
        months = s.start[-1].astype("datetime64[M]") + np.arange(1, extra + 1)
        first, mid, doy, dt = month_axis(months)
        lag = 12
    else:
        first = s.start[-1] + np.arange(1, extra + 1).astype("timedelta64[D]")
        mid = s.days[-1] + np.arange(1, extra + 1, dtype=np.float64)
        doy = ((first - first.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.float64)
               + 1.0)
        dt = np.ones(extra)
        lag = 365

    def ext(x: np.ndarray, fill: float | None = None) -> np.ndarray:
        y = np.empty(T, np.float64)
        y[:n] = x
        for j in range(n, T):  # forward, so pads longer than a year copy earlier copies
            y[j] = fill if fill is not None else (y[j - lag] if j - lag >= 0 else y[n - 1])
        return y

    forcing = {k: ext(v) for k, v in s.forcing.items()}
    forcing["co2"] = ext(s.forcing["co2"], fill=s.forcing["co2"][-1])
    log.warning("%s: %d step(s) shorter than the longest site; padded at the end (%s on) with "
                "forcing copied from a year earlier and zero observation weights (valid_step=0)",
                s.site.site_id, extra, first[0])
    return Series(site=s.site, path=s.path, days=np.r_[s.days, mid], doy=np.r_[s.doy, doy],
                  delta_t=np.r_[s.delta_t, dt], start=np.r_[s.start, first], forcing=forcing,
                  obs={k: ext(v, fill=np.nan) for k, v in s.obs.items()},
                  unc={k: ext(v, fill=np.nan) for k, v in s.unc.items()}), valid


def time_split_year(s: Series, steps_per_year: float) -> int:
    """First year of the test period of the published site experiments: the first
    ceil(n_years / 2) calendar years train, the rest test (n_years = round(steps / steps per
    year))."""
    n_years = int(np.round(s.n / steps_per_year))
    first_year = int(str(s.start[0])[:4])
    return first_year + int(math.ceil(n_years / 2))


def _unc_weights(obs: np.ndarray, unc: np.ndarray) -> np.ndarray:
    """(pixel, time) weights 1/unc^2 where observed (a missing or non-positive unc counts as
    the product's median), normalised to mean 1 over the observed elements of every site
    together, so that sites keep their relative precision; 0 at gaps."""
    ok = np.isfinite(obs)
    good = ok & np.isfinite(unc) & (unc > 0)
    if not good.any():
        return ok.astype(np.float64)
    u = np.where(good, unc, np.median(unc[good]))
    w = np.where(ok, 1.0 / (u * u), 0.0)
    return w / w[ok].mean()


def _parse_ids(ids: Sequence[str] | str | None) -> list[str]:
    if ids is None:
        return []
    if isinstance(ids, str):
        ids = ids.split(",")
    return [i.strip() for i in ids if i and i.strip()]


def select_sites(sites_dir: str | os.PathLike, only: Sequence[str] | str | None = None
                 ) -> list[tuple[Site, Path]]:
    """The sites to import (CSV order) with their files; checks that files and rows match."""
    d = Path(sites_dir)
    if not d.is_dir():
        raise DifferlandError(f"{d}: sites directory not found")
    table = read_site_table(d / COORDS_FILE)
    files = {p.stem: p for p in sorted(d.glob("*.nc"))}
    wanted = _parse_ids(only)
    by_id = {s.site_id: s for s in table}
    problems = []
    if wanted:
        unknown = [w for w in wanted if w not in by_id]
        if unknown:
            problems.append(f"site(s) {', '.join(unknown)} asked for but not in {COORDS_FILE} "
                            f"(sites: {', '.join(by_id)})")
        table = [s for s in table if s.site_id in set(wanted)]
    else:
        extra = sorted(set(files) - set(by_id))
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
    series, problems = [], []
    for site, path in chosen:  # every file checked before anything is built
        try:
            series.append(load_site(path, site, need_unc=weights_from_unc))
        except DataValidationError as e:
            problems += [f"{path.name} (site {site.site_id}): {p}" for p in e.problems]
    if problems:
        raise DataValidationError(problems, source=str(sites_dir))
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
    test, dev = _parse_ids(test_sites), _parse_ids(dev_sites)
    for flag, chosen_ids in (("--test-sites", test), ("--dev-sites", dev)):
        unknown = [t for t in chosen_ids if t not in ids]
        if unknown:
            raise DifferlandError(f"{flag}: {', '.join(unknown)} not among the imported sites "
                                  f"({', '.join(ids)})")
    both = sorted(set(test) & set(dev))
    if both:
        raise DifferlandError(f"--test-sites and --dev-sites both name {', '.join(both)}")
    return test, dev


def sites_dataset(series: list[Series], *, monthly: bool, test: Sequence[str], dev: Sequence[str],
                  min_valid_fraction: float, weights_from_unc: bool, source: str,
                  obs_vars: dict[str, tuple[str, str, str, str]], source_files: list[str]) -> xr.Dataset:
    """The site store Dataset from loaded daily series (one per site; see the module doc):
    monthly aggregation, padding, the split, predictors from the site table, the observations
    of ``obs_vars`` (product -> (variable, uncertainty variable, stream, description)) that the
    series hold. Shared by every site importer (site netCDFs, FLUXNET2015 CSVs)."""
    t0 = _time.perf_counter()
    ids = [s.site.site_id for s in series]
    if monthly:
        series = [aggregate_monthly(s, min_valid_fraction) for s in series]
    spy_nominal = 12.0 if monthly else 365.25
    test_from = [time_split_year(s, spy_nominal) for s in series]
    lengths = [s.n for s in series]
    T = max(lengths)
    padded = [_pad(s, T, monthly) for s in series]
    series = [p[0] for p in padded]
    valid = np.stack([p[1] for p in padded])
    P = len(series)

    def stack(get) -> np.ndarray:
        return np.stack([np.asarray(get(s), dtype=np.float64) for s in series])

    step = {"time": stack(lambda s: s.days), "doy": stack(lambda s: s.doy),
            "delta_t": stack(lambda s: s.delta_t), "co2": stack(lambda s: s.forcing["co2"])}
    per_pixel = [k for k in PER_PIXEL_FORCING if not np.all(step[k] == step[k][:1])]
    years = np.stack([s.start.astype("datetime64[Y]").astype(np.int64) + 1970 for s in series])
    time_test = (years >= np.asarray(test_from)[:, None]).astype(np.int8)

    pixel = np.arange(P)
    split = np.array([splits.TEST if i in test else splits.DEV if i in dev else splits.TRAIN
                      for i in ids], np.int8)
    data: dict[str, xr.Variable] = {
        "patch": schema_var("patch", pixel),
        "split": schema_var("split", split),
        "doy": schema_var("doy", step["doy"][0]),
        "delta_t": schema_var("delta_t", step["delta_t"][0]),
        "co2": schema_var("co2", step["co2"][0]),
    }
    for k in per_pixel:
        data[by_pixel_name(k)] = schema_var(
            k, step[k], ("pixel", "time"),
            long_name=f"{schema.VARS[k].long_name}, per site (replaces {k} along time)")
    for k in ("t_min", "t_max", "swrad", "vpd", "precip", "burned_area"):
        data[k] = schema_var(k, stack(lambda s, k=k: s.forcing[k]))
    sites = [s.site for s in series]
    onehot = {n: np.array([1.0 if IGBP_TO_PFT[x.igbp] == n else 0.0 for x in sites]) for n in PFT_NAMES}
    for n in PFT_NAMES:
        data[n] = schema_var(n, onehot[n], source="IGBP class of site_coords.csv, one-hot")
    data["MAT"] = schema_var("MAT", [x.mat for x in sites], source="site_coords.csv MAT")
    data["MAP"] = schema_var("MAP", [x.map for x in sites], source="site_coords.csv MAP")
    data["elevation"] = schema_var("elevation", [x.elev for x in sites], source="site_coords.csv ELEV")
    data.update(site_onehot(ids))
    for product, (var, uvar, stream, what) in obs_vars.items():
        if product not in series[0].obs:
            continue
        value = stack(lambda s, p=product: s.obs[p])
        if weights_from_unc and uvar and product in series[0].unc:
            w = _unc_weights(value, stack(lambda s, p=product: s.unc[p]))
            wdesc = f"1/{uvar}^2 normalised to mean 1 over observed steps"
        else:
            w = np.isfinite(value).astype(np.float64)
            wdesc = "1 where observed, 0 at gaps"
        agg = (f"; monthly mean of valid days where >= {min_valid_fraction:g} of the month's "
               "days are valid" if monthly else "")
        data.update(obs_variables(product, stream, value, w, what, source_variable=var,
                                  weights=wdesc, description=what + agg))
    data["valid_step"] = xr.Variable(("pixel", "time"), valid.astype(np.int8), {
        "units": "1", "long_name": "1 = a step of the site's own record, 0 = padding after its "
        "end (forcing copied from a year earlier, observation weights 0)"})
    if not test and not dev:  # a split by sites and one by time exclude each other
        data["time_test"] = xr.Variable(("pixel", "time"), time_test, {
            "units": "1", "long_name": "time split: 0 = training step, 1 = test step (from "
            "January 1 of first year + ceil(n_years / 2)); train weights x (1 - time_test), "
            "test weights x time_test"})
    data["site_id"] = xr.Variable("pixel", np.array(ids), {"long_name": "FLUXNET site id"})
    data["site_cluster"] = xr.Variable("pixel", np.array([x.cluster for x in sites]),
                                       {"long_name": "climate cluster of the site study"})
    data["igbp"] = xr.Variable("pixel", np.array([x.igbp for x in sites]),
                               {"long_name": "IGBP vegetation class"})
    coords = {
        "time": schema_var("time", step["time"][0]),
        "lat": schema_var("lat", [x.lat for x in sites]),
        "lon": schema_var("lon", [x.lon for x in sites]),
        "row": schema_var("row", pixel),
        "col": schema_var("col", np.zeros(P)),
    }
    kind = "monthly" if monthly else "daily"
    attrs = base_attrs(
        title=f"FLUXNET sites ({P} site(s), {kind}): {', '.join(ids)}",
        source=source, steps_per_year=12 if monthly else 365, max_patch_size=1,
        grid_resolution_deg=0.0,
        sites=ids,
        site_years={x.site_id: [x.start_year, x.end_year] for x in sites},
        site_test_from_year={i: int(y) for i, y in zip(ids, test_from)},
        site_steps={i: int(n) for i, n in zip(ids, lengths)},
        time_axis=("step index of each site's own series (step 0 = its first "
                   f"{'month' if monthly else 'day'}); "
                   + ("time, doy, delta_t, co2 along time are pixel 0's; per-site series in "
                      + ", ".join(by_pixel_name(k) for k in per_pixel) + " replace them"
                      if per_pixel else "every site shares time, doy, delta_t and co2")),
        per_pixel_forcing=list(per_pixel),
        **{splits.CONVENTION_ATTR: splits.CONVENTION},
        time_split=("none: split by sites (--test-sites, --dev-sites)" if test or dev else
                    "time_test: steps from January 1 of (first year + ceil(n_years / 2)) test"),
        igbp_to_pft=dict(IGBP_TO_PFT),
        nbe_product="obs_nbe holds tower NEE (positive = source): NBE = NEE without fire; each "
                    "site is a one-pixel patch",
        weights="1/unc^2, normalised" if weights_from_unc else "1 where observed, 0 at gaps",
        **({"monthly_min_valid_fraction": float(min_valid_fraction)} if monthly else {}),
        source_files=list(source_files),
    )
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    log.info("%d site(s) imported (%s, %d steps; per-pixel %s) in %.1f s", P, kind, T,
             ", ".join(per_pixel) or "nothing", _time.perf_counter() - t0)
    return ds


def sites_to_store(sites_dir: str | os.PathLike, url: str, monthly: bool = False,
                   test_sites: Sequence[str] | str | None = None,
                   only: Sequence[str] | str | None = None, min_valid_fraction: float = 0.5,
                   weights_from_unc: bool = False, storage_options: dict | None = None,
                   overwrite: bool = False, dev_sites: Sequence[str] | str | None = None) -> xr.Dataset:
    """Import the sites and write the store at ``url`` (complete flag last). Returns the
    Dataset. The target is checked first, before any file is read."""
    check_target(url, storage_options, overwrite)
    ds = import_sites(sites_dir, monthly=monthly, test_sites=test_sites, only=only,
                      min_valid_fraction=min_valid_fraction, weights_from_unc=weights_from_unc,
                      dev_sites=dev_sites)
    write_store(ds, url, storage_options=storage_options, overwrite=overwrite)
    return ds
