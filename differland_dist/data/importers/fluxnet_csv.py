"""Import FLUXNET2015 / ONEFlux FULLSET site CSVs as a site store (``differland
import-fluxnet``), through the same store builder as the site netCDFs
(:func:`differland_dist.data.importers.site_store.sites_dataset`).

Input: a directory with ``site_coords.csv`` (the site table of :mod:`.sites`: lat, lon, IGBP,
MAT, MAP, ELEV) and per site one ``FLX_<SITE_ID>_FLUXNET2015_FULLSET_DD_<years>_<v>.csv``
(daily) or, without it, the half-hourly ``..._HH_...`` / hourly ``..._HR_...`` file, which is
aggregated to days. Missing values are -9999.

Columns used (FULLSET names and units):

========================  =======================  ==========================================
store                     DD (daily)               HH/HR (aggregated to days)
========================  =======================  ==========================================
t_min, t_max (degC)       TA_F (daily mean: the    min and max of TA_F
                          DD files have no
                          extremes, so both are
                          the mean)
swrad (MJ m-2 d-1)        SW_IN_F (W m-2)          mean of SW_IN_F (W m-2)
vpd (hPa)                 VPD_F                    mean of VPD_F
precip (mm d-1)           P_F (mm d-1)             sum of P_F (mm per step)
co2 (ppm)                 CO2_F_MDS                mean of CO2_F_MDS
obs_gpp_flux (gC m-2 d-1) GPP_NT_VUT_REF           mean of GPP_NT_VUT_REF (umolCO2 m-2 s-1)
obs_reco_flux             RECO_NT_VUT_REF          mean of RECO_NT_VUT_REF (umolCO2 m-2 s-1)
obs_nbe (= NEE)           NEE_VUT_REF              mean of NEE_VUT_REF (umolCO2 m-2 s-1)
obs_et_flux (mm d-1)      LE_F_MDS (W m-2) / the   mean of LE_F_MDS / the latent heat
                          latent heat of
                          vaporisation
========================  =======================  ==========================================

Quality: DD ``NEE_VUT_REF_QC`` and ``LE_F_MDS_QC`` are the day's fraction of measured or
good-quality gap-filled records; HH/HR QC flags 0 (measured) and 1 (good gap-fill) count as
good, and the day's fraction is computed. A day whose fraction is below ``min_qc`` (default
0.5) is a gap of NEE, GPP and RECO (partitioned from NEE) or of ET. Uncertainty (with
``weights_from_unc``): ``NEE_VUT_REF_JOINTUNC`` for NEE (other products keep weights 1).
CO2 gaps are filled by linear interpolation in time; any gap in the other forcing (the ``_F``
columns are gap-filled by ONEFlux) is an error naming the file, column and dates.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from differland_dist.data import schema
from differland_dist.data.importers.site_series import COORDS_FILE, REF_DAY, Series, Site
from differland_dist.data.importers.site_store import sites_dataset
from differland_dist.data.importers.sites import (
    check_held_out, check_min_valid_fraction, chosen_rows, load_every_site, read_site_table)
from differland_dist.data.store import check_target, write_store
from differland_dist.storage.location import Location
from differland_dist.errors import DataValidationError, DifferlandError

log = logging.getLogger(__name__)

MISSING = -9999.0
#: Latent heat of vaporisation (J kg-1): LE (W m-2) / LAMBDA * 86400 s = ET (kg m-2 d-1 = mm d-1).
LAMBDA = 2.45e6
#: umol CO2 m-2 s-1 -> g C m-2 d-1: 12.011e-6 g C per umol, 86400 s per day.
UMOL_TO_GC_DAY = 12.011e-6 * 86400.0
#: W m-2 (a daily mean) -> MJ m-2 d-1.
W_TO_MJ_DAY = 86400.0 / 1e6
FORCING_COLUMNS = ("TA_F", "SW_IN_F", "VPD_F", "P_F", "CO2_F_MDS")
FLUX_COLUMNS = ("GPP_NT_VUT_REF", "RECO_NT_VUT_REF", "NEE_VUT_REF", "NEE_VUT_REF_QC",
                "LE_F_MDS", "LE_F_MDS_QC")
#: Product -> (column, uncertainty column, stream, description) (``sites.OBS_VARS``' layout).
OBS_VARS: dict[str, tuple[str, str, str, str]] = {
    "gpp_flux": ("GPP_NT_VUT_REF", "", "gpp_flux",
                 "tower gross primary production (FLUXNET2015 FULLSET, nighttime partitioning)"),
    "reco_flux": ("RECO_NT_VUT_REF", "", "reco_flux",
                  "tower ecosystem respiration (FLUXNET2015 FULLSET, nighttime partitioning)"),
    "et_flux": ("LE_F_MDS", "", "et_flux", "tower evapotranspiration LE_F_MDS / 2.45 MJ kg-1"),
    "nbe": ("NEE_VUT_REF", "NEE_VUT_REF_JOINTUNC", "nbe",
            "tower net ecosystem exchange NEE_VUT_REF (FLUXNET2015 FULLSET), positive = source; "
            "stands for NBE (= NEE without fire) of the site's one-pixel patch"),
}


def find_file(sites_dir: Path, site_id: str) -> tuple[Path, str]:
    """The site's FULLSET file and its resolution ("DD", else "HH" or "HR")."""
    for res in ("DD", "HH", "HR"):
        hits = sorted(glob.glob(str(sites_dir / f"FLX_{site_id}_FLUXNET2015_FULLSET_{res}_*.csv")))
        if hits:
            return Path(hits[-1]), res
    raise DifferlandError(f"{sites_dir}: no FLX_{site_id}_FLUXNET2015_FULLSET_DD_*.csv (or _HH_ / "
                          f"_HR_) file for site {site_id} of {COORDS_FILE}")


def _daily(df: pd.DataFrame, res: str, path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(days datetime64[D], column -> daily values in FULLSET DD units; QC as good fractions)."""
    if res == "DD":
        day = pd.to_datetime(df["TIMESTAMP"].astype(np.int64).astype(str), format="%Y%m%d")
        used = (*FORCING_COLUMNS, *FLUX_COLUMNS, "NEE_VUT_REF_JOINTUNC")
        cols = {c: pd.to_numeric(df[c]).to_numpy(np.float64) for c in used if c in df.columns}
        return day.to_numpy().astype("datetime64[D]"), cols
    start = pd.to_datetime(df["TIMESTAMP_START"].astype(np.int64).astype(str), format="%Y%m%d%H%M")
    g = df.assign(_day=start.dt.floor("D")).groupby("_day", sort=True)
    out = {"TA_F_MIN": g["TA_F"].min().to_numpy(), "TA_F_MAX": g["TA_F"].max().to_numpy(),
           "P_F": g["P_F"].sum(min_count=1).to_numpy()}
    for c in ("SW_IN_F", "VPD_F", "CO2_F_MDS"):
        out[c] = g[c].mean().to_numpy()
    for c in ("GPP_NT_VUT_REF", "RECO_NT_VUT_REF", "NEE_VUT_REF", "LE_F_MDS", "NEE_VUT_REF_JOINTUNC"):
        if c in df.columns:
            x = g[c].mean().to_numpy()
            out[c] = x * UMOL_TO_GC_DAY if c != "LE_F_MDS" else x
    for c in ("NEE_VUT_REF_QC", "LE_F_MDS_QC"):
        out[c] = g[c].apply(lambda q: float(np.mean(q.isin([0, 1])))).to_numpy()
    days = np.asarray(list(g.groups), dtype="datetime64[D]")
    return days, out


def load_csv_site(path: Path, res: str, site: Site, min_qc: float = 0.5,
                  need_unc: bool = False) -> Series:
    """One site's daily :class:`~.site_series.Series` from its FULLSET CSV (see the module doc).
    Raises DataValidationError listing missing columns, gaps in forcing, bad dates or ranges."""
    try:
        df = pd.read_csv(path, na_values=[MISSING, str(int(MISSING))])
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DifferlandError(f"{path}: cannot read as CSV: {e}") from None
    time_col = "TIMESTAMP" if res == "DD" else "TIMESTAMP_START"
    missing = [c for c in (time_col, *FORCING_COLUMNS, *FLUX_COLUMNS) if c not in df.columns]
    if need_unc and "NEE_VUT_REF_JOINTUNC" not in df.columns:
        missing.append("NEE_VUT_REF_JOINTUNC")
    if missing:
        raise DataValidationError([f"column(s) {', '.join(missing)} missing (site {site.site_id}; "
                                   f"a FLUXNET2015 FULLSET {res} file has them)"], source=str(path))
    try:
        days, c = _daily(df, res, path)
    except (ValueError, TypeError) as e:
        raise DataValidationError([f"not a FULLSET {res} table: {time_col} must be "
                                   f"{'YYYYMMDD' if res == 'DD' else 'YYYYMMDDHHMM'} and the "
                                   f"value columns numbers ({e})"], source=str(path)) from None
    problems = []
    if days.size < 2 or np.any(np.diff(days).astype(np.int64) != 1):
        problems.append(f"{time_col}: expected consecutive days, got {days.size} day(s) with "
                        f"{int(np.sum(np.diff(days).astype(np.int64) != 1))} jump(s)")
    t_min = c["TA_F_MIN"] if res != "DD" else c["TA_F"]
    t_max = c["TA_F_MAX"] if res != "DD" else c["TA_F"]
    co2 = c["CO2_F_MDS"].copy()
    ok = np.isfinite(co2)
    if not ok.any():
        problems.append("CO2_F_MDS: no value at all (needed for the CO2 forcing)")
    elif not ok.all():
        idx = np.arange(co2.size)
        co2 = np.interp(idx, idx[ok], co2[ok])
        log.info("%s: CO2_F_MDS gaps on %d day(s) filled by linear interpolation", path.name, int((~ok).sum()))
    forcing = {"t_min": t_min, "t_max": t_max, "swrad": c["SW_IN_F"] * W_TO_MJ_DAY,
               "vpd": c["VPD_F"], "precip": c["P_F"], "co2": co2, "burned_area": np.zeros(days.size)}
    column = {"t_min": "TA_F", "t_max": "TA_F", "swrad": "SW_IN_F", "vpd": "VPD_F",
              "precip": "P_F", "co2": "CO2_F_MDS", "burned_area": "(none)"}
    for name, x in forcing.items():
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            problems.append(f"{column[name]}: {bad.size} missing value(s) (-9999) from {days[bad[0]]}; "
                            "forcing must be gap-free (use the gap-filled _F columns)")
        spec = schema.VARS[name]
        p = schema.out_of_range(column[name], x, spec.lo, spec.hi, spec.units)
        if p:
            problems.append(p)
    if problems:
        raise DataValidationError(problems, source=str(path))
    good_c = c["NEE_VUT_REF_QC"] >= min_qc
    good_w = c["LE_F_MDS_QC"] >= min_qc
    obs = {"gpp_flux": np.where(good_c, c["GPP_NT_VUT_REF"], np.nan),
           "reco_flux": np.where(good_c, c["RECO_NT_VUT_REF"], np.nan),
           "nbe": np.where(good_c, c["NEE_VUT_REF"], np.nan),
           "et_flux": np.where(good_w, c["LE_F_MDS"] / LAMBDA * 86400.0, np.nan)}
    unc = {"nbe": c["NEE_VUT_REF_JOINTUNC"]} if need_unc else {}
    start = days
    doy = (days - days.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.float64) + 1.0
    return Series(site=site, path=path, days=(days - REF_DAY).astype(np.float64), doy=doy,
                  delta_t=np.ones(days.size), start=start, forcing=forcing, obs=obs, unc=unc)


def import_fluxnet_csv(sites_dir: str | os.PathLike, monthly: bool = False,
                       test_sites: Sequence[str] | str | None = None,
                       dev_sites: Sequence[str] | str | None = None,
                       only: Sequence[str] | str | None = None, min_valid_fraction: float = 0.5,
                       weights_from_unc: bool = False, min_qc: float = 0.5) -> xr.Dataset:
    """The site store Dataset of a directory of FULLSET CSVs (arguments as
    :func:`~.sites.import_sites`; ``min_qc``: the day's good-quality fraction an observation
    needs)."""
    check_min_valid_fraction(min_valid_fraction)
    d = Path(sites_dir)
    problems: list[str] = []
    sites = chosen_rows(read_site_table(d / COORDS_FILE), only, problems)
    if problems:
        raise DataValidationError(problems, source=str(d))
    ids = [s.site_id for s in sites]
    test, dev = check_held_out(ids, test_sites, dev_sites)
    found = {site.site_id: find_file(d, site.site_id) for site in sites}
    files = [COORDS_FILE] + [path.name for path, _ in found.values()]
    series = load_every_site(
        [(site, found[site.site_id][0]) for site in sites],
        lambda site, path: load_csv_site(path, found[site.site_id][1], site, min_qc,
                                         need_unc=weights_from_unc), d)
    return sites_dataset(series, monthly=monthly, test=test, dev=dev,
                         min_valid_fraction=min_valid_fraction, weights_from_unc=weights_from_unc,
                         source="fluxnet2015_csv", obs_vars=OBS_VARS, source_files=files)


def fluxnet_csv_to_store(sites_dir: str | os.PathLike, where: Location | str,
                         overwrite: bool = False, **kw) -> xr.Dataset:
    """Import and write the store at ``where`` (target checked first; complete flag last)."""
    check_target(where, overwrite=overwrite)
    ds = import_fluxnet_csv(sites_dir, **kw)
    write_store(ds, where, overwrite=overwrite)
    return ds
