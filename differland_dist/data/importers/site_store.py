"""The site store's Dataset from loaded site series (one pixel and one patch per site; see
:mod:`.sites` for the layout). Shared by every site importer (site netCDFs, FLUXNET2015 CSVs).
"""

from __future__ import annotations

import logging
import time as _time
from typing import Callable, NamedTuple, Sequence

import numpy as np
import xarray as xr

from differland_dist.data import schema, splits
from differland_dist.data.importers import base_attrs, obs_variables, schema_var
from differland_dist.data.importers.site_series import (
    IGBP_TO_PFT, PFT_NAMES, Series, Site, aggregate_monthly, pad_series, time_split_year,
    unc_weights)
from differland_dist.data.schema import PER_PIXEL_FORCING, by_pixel_name
from differland_dist.data.site_predictors import site_onehot

log = logging.getLogger(__name__)

#: Product -> (variable, uncertainty variable, stream, description).
ObsVars = dict[str, tuple[str, str, str, str]]


def _stack(series: list[Series], get: Callable[[Series], np.ndarray]) -> np.ndarray:
    """(pixel, time) float64 of one quantity of every site."""
    return np.stack([np.asarray(get(s), dtype=np.float64) for s in series])


def _layout_and_forcing(series: list[Series], split: np.ndarray, step: dict[str, np.ndarray],
                        per_pixel: list[str]) -> dict[str, xr.Variable]:
    """Patch (= pixel), split, the per-step series (pixel 0's, and per site where they
    differ) and the forcing."""
    data = {
        "patch": schema_var("patch", np.arange(len(series))),
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
        data[k] = schema_var(k, _stack(series, lambda s, k=k: s.forcing[k]))
    return data


def _predictor_variables(sites: list[Site]) -> dict[str, xr.Variable]:
    """The IGBP class one-hot in the PFT fractions; MAT, MAP and elevation from the table; the
    site one-hot of the SITE set (each site its own parameters)."""
    data = {n: schema_var(n, np.array([1.0 if IGBP_TO_PFT[x.igbp] == n else 0.0 for x in sites]),
                          source="IGBP class of site_coords.csv, one-hot") for n in PFT_NAMES}
    data["MAT"] = schema_var("MAT", [x.mat for x in sites], source="site_coords.csv MAT")
    data["MAP"] = schema_var("MAP", [x.map for x in sites], source="site_coords.csv MAP")
    data["elevation"] = schema_var("elevation", [x.elev for x in sites], source="site_coords.csv ELEV")
    data.update(site_onehot([x.site_id for x in sites]))
    return data


def _observation_variables(series: list[Series], obs_vars: ObsVars, monthly: bool,
                           min_valid_fraction: float, weights_from_unc: bool) -> dict[str, xr.Variable]:
    """Every product of ``obs_vars`` the series hold, weighted 1 (or 1/unc^2 normalised)."""
    data = {}
    for product, (var, uvar, stream, what) in obs_vars.items():
        if product not in series[0].obs:
            continue
        value = _stack(series, lambda s, p=product: s.obs[p])
        if weights_from_unc and uvar and product in series[0].unc:
            w = unc_weights(value, _stack(series, lambda s, p=product: s.unc[p]))
            wdesc = f"1/{uvar}^2 normalised to mean 1 over observed steps"
        else:
            w = np.isfinite(value).astype(np.float64)
            wdesc = "1 where observed, 0 at gaps"
        agg = (f"; monthly mean of valid days where >= {min_valid_fraction:g} of the month's "
               "days are valid" if monthly else "")
        data.update(obs_variables(product, stream, value, w, what, source_variable=var,
                                  weights=wdesc, description=what + agg))
    return data


def _site_variables(sites: list[Site], valid: np.ndarray, time_test: np.ndarray | None
                    ) -> dict[str, xr.Variable]:
    """Real steps, the time split (when not split by sites) and the sites' labels."""
    data = {"valid_step": xr.Variable(("pixel", "time"), valid.astype(np.int8), {
        "units": "1", "long_name": "1 = a step of the site's own record, 0 = padding after its "
        "end (forcing copied from a year earlier, observation weights 0)"})}
    if time_test is not None:  # a split by sites and one by time exclude each other
        data["time_test"] = xr.Variable(("pixel", "time"), time_test, {
            "units": "1", "long_name": "time split: 0 = training step, 1 = test step (from "
            "January 1 of first year + ceil(n_years / 2)); train weights x (1 - time_test), "
            "test weights x time_test"})
    data["site_id"] = xr.Variable("pixel", np.array([x.site_id for x in sites]),
                                  {"long_name": "FLUXNET site id"})
    data["site_cluster"] = xr.Variable("pixel", np.array([x.cluster for x in sites]),
                                       {"long_name": "climate cluster of the site study"})
    data["igbp"] = xr.Variable("pixel", np.array([x.igbp for x in sites]),
                               {"long_name": "IGBP vegetation class"})
    return data


def _coordinates(sites: list[Site], days: np.ndarray) -> dict[str, xr.Variable]:
    P = len(sites)
    return {
        "time": schema_var("time", days),
        "lat": schema_var("lat", [x.lat for x in sites]),
        "lon": schema_var("lon", [x.lon for x in sites]),
        "row": schema_var("row", np.arange(P)),
        "col": schema_var("col", np.zeros(P)),
    }


class SiteSteps(NamedTuple):
    """Per-site facts of the steps the attributes record."""

    test_from: list[int]   # first year of each site's test period (time split)
    lengths: list[int]     # each site's own number of steps
    per_pixel: list[str]   # per-step series that differ between sites


def _attributes(sites: list[Site], steps: SiteSteps, monthly: bool, by_sites: bool,
                weights_from_unc: bool, min_valid_fraction: float, source: str,
                source_files: list[str]) -> dict:
    test_from, lengths, per_pixel = steps
    ids = [x.site_id for x in sites]
    kind = "monthly" if monthly else "daily"
    return base_attrs(
        title=f"FLUXNET sites ({len(sites)} site(s), {kind}): {', '.join(ids)}",
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
        time_split=("none: split by sites (--test-sites, --dev-sites)" if by_sites else
                    "time_test: steps from January 1 of (first year + ceil(n_years / 2)) test"),
        igbp_to_pft=dict(IGBP_TO_PFT),
        nbe_product="obs_nbe holds tower NEE (positive = source): NBE = NEE without fire; each "
                    "site is a one-pixel patch",
        weights="1/unc^2, normalised" if weights_from_unc else "1 where observed, 0 at gaps",
        **({"monthly_min_valid_fraction": float(min_valid_fraction)} if monthly else {}),
        source_files=list(source_files),
    )


def sites_dataset(series: list[Series], *, monthly: bool, test: Sequence[str], dev: Sequence[str],
                  min_valid_fraction: float, weights_from_unc: bool, source: str,
                  obs_vars: ObsVars, source_files: list[str]) -> xr.Dataset:
    """The site store Dataset from loaded daily series (one per site; see :mod:`.sites`):
    monthly aggregation, padding, the split, predictors from the site table, the observations
    of ``obs_vars`` (product -> (variable, uncertainty variable, stream, description)) that the
    series hold."""
    t0 = _time.perf_counter()
    ids = [s.site.site_id for s in series]
    if monthly:
        series = [aggregate_monthly(s, min_valid_fraction) for s in series]
    test_from = [time_split_year(s, 12.0 if monthly else 365.25) for s in series]
    lengths = [s.n for s in series]
    T = max(lengths)
    padded = [pad_series(s, T, monthly) for s in series]
    series = [p[0] for p in padded]
    valid = np.stack([p[1] for p in padded])
    step = {"time": _stack(series, lambda s: s.days), "doy": _stack(series, lambda s: s.doy),
            "delta_t": _stack(series, lambda s: s.delta_t),
            "co2": _stack(series, lambda s: s.forcing["co2"])}
    per_pixel = [k for k in PER_PIXEL_FORCING if not np.all(step[k] == step[k][:1])]
    years = np.stack([s.start.astype("datetime64[Y]").astype(np.int64) + 1970 for s in series])
    by_sites = bool(test or dev)
    time_test = None if by_sites else (years >= np.asarray(test_from)[:, None]).astype(np.int8)
    split = np.array([splits.TEST if i in test else splits.DEV if i in dev else splits.TRAIN
                      for i in ids], np.int8)
    sites = [s.site for s in series]
    data = {**_layout_and_forcing(series, split, step, per_pixel), **_predictor_variables(sites),
            **_observation_variables(series, obs_vars, monthly, min_valid_fraction, weights_from_unc),
            **_site_variables(sites, valid, time_test)}
    ds = xr.Dataset(data, coords=_coordinates(sites, step["time"][0]),
                    attrs=_attributes(sites, SiteSteps(test_from, lengths, per_pixel), monthly,
                                      by_sites, weights_from_unc, min_valid_fraction, source,
                                      source_files))
    log.info("%d site(s) imported (%s, %d steps; per-pixel %s) in %.1f s", len(sites),
             "monthly" if monthly else "daily", T, ", ".join(per_pixel) or "nothing",
             _time.perf_counter() - t0)
    return ds
