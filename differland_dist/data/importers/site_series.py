"""One FLUXNET site as the site importers see it: the site table's row (:class:`Site`), its
steps (:class:`Series`, daily as read or aggregated to calendar months), and what the store
needs of them: monthly aggregation, padding to a common length, the time split, weights from
uncertainties. Shared by :mod:`.sites` (site netCDFs) and :mod:`.fluxnet_csv` (FULLSET CSVs).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from differland_dist.data import schema

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
#: Day 0 of every site's day index.
REF_DAY = np.datetime64("2001-01-01", "D")


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


def month_axis(months: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For datetime64[M] months: (first day datetime64[D], mid-month days since 2001-01-01,
    mid-month day of year, days in the month)."""
    first = months.astype("datetime64[D]")
    n = ((months + 1).astype("datetime64[D]") - first).astype(np.float64)
    jan1 = months.astype("datetime64[Y]").astype("datetime64[D]")
    mid = (first - REF_DAY).astype(np.float64) + n / 2.0
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


def pad_series(s: Series, T: int, monthly: bool) -> tuple[Series, np.ndarray]:
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


def unc_weights(obs: np.ndarray, unc: np.ndarray) -> np.ndarray:
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
