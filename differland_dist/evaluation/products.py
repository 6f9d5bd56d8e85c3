"""The evaluation's gridded products (``evaluation.zarr``): global annual carbon totals and
zonal means read block by block (:func:`carbon_products`), the per-pixel skill maps and the
paper's skill maps as CF datasets, and their writer (replacing only a products store we wrote)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import xarray as xr

from differland_dist.common import provenance
from differland_dist.data.rows import with_retries
from differland_dist.data.store import quiet_zarr, zarr_store
from differland_dist.errors import DifferlandError
from differland_dist.evaluation import carbon, skill_maps
from differland_dist.evaluation.blocks import block_slices, output_grid, output_times
from differland_dist.inference.export import with_bounds
from differland_dist.vocabulary.grid import EARTH_RADIUS_M, to_grid
from differland_dist.storage.location import Location
from differland_dist.vocabulary.units import udunits

PRODUCTS_NAME = "evaluation.zarr"
PRODUCTS_KIND = "evaluation-products"


def carbon_products(group, warm_up: int, block_pixels: int) -> dict[str, Any] | None:
    """Global annual totals (PgC yr-1) and zonal means of a gridded output, read block by
    block (see :mod:`differland_dist.evaluation.carbon`); None for outputs without a grid."""
    attrs = dict(group.attrs)
    with quiet_zarr():
        names = set(group.array_keys())
    if not attrs.get("has_maps") or "pixel_area" not in names:
        return None
    series = set(attrs.get("series", []))
    total_names = [n for n in carbon.TOTAL_SERIES if n in series]
    zonal_names = [n for n in carbon.ZONAL_SERIES if n in series]
    N, T, spy = int(attrs["n_pixels"]), int(attrs["n_time"]), int(attrs["steps_per_year"])
    with quiet_zarr():
        area = np.asarray(group["pixel_area"][:], np.float64)
        row = np.asarray(group["row"][:], np.int64)
        lat = np.asarray(group["lat"][:], np.float64)
        step_days = np.asarray(group["step_days"][:], np.float64) if "step_days" in names else None
        arrays = {n: group[n] for n in dict.fromkeys(total_names + zonal_names)}
    days = carbon.step_days(step_days, T, spy)
    totals = carbon.GlobalTotals(total_names, T)
    zonal = carbon.ZonalMeans(zonal_names, lat.size)
    for s in block_slices(N, int(attrs["chunk_pixels"]), block_pixels):
        v = {n: np.asarray(with_retries(lambda arr=arr: arr[s], f"output {n}",
                                        fs=getattr(arr.store, "fs", None)), np.float64)
             for n, arr in arrays.items()}
        bad = [n for n, x in v.items() if not np.isfinite(x).all()]
        if bad:
            raise DifferlandError(f"output series {bad} hold non-finite values in pixels "
                                  f"{s.start}..{s.stop - 1}; cannot form global totals")
        totals.add(v, area[s])
        zonal.add({n: v[n][:, warm_up:] for n in zonal_names}, area[s], row[s])
    tot = totals.result(days, spy)
    years = [int(str(t)[:4]) for t in output_times(group)[::spy][: T // spy]]
    after = [i for i in range(T // spy) if i * spy >= warm_up]
    return {
        "units": "PgC yr-1",
        "arithmetic": "total_y = sum over the year's steps t and pixels p of F[p, t] (g m-2 d-1) "
                      "* days[t] (d, step_days) * pixel_area[p] (m2) / 1e15 (g per Pg); "
                      "pixel_area = R^2 * dlon * |sin(lat_n) - sin(lat_s)|, R = "
                      f"{EARTH_RADIUS_M} m",
        "land_area_m2": float(area.sum()),
        "years": years,
        "annual": {n: [float(x) for x in v] for n, v in tot.items()},
        "mean_after_warm_up": {n: float(np.mean(v[after])) if after else float("nan")
                               for n, v in tot.items()},
        "zonal_means": zonal.result(),
        "zonal_units": {n: group[n].attrs.get("units", "") for n in zonal_names},
    }


def products_dataset(group, skill: dict[str, dict[str, np.ndarray]], totals: dict[str, Any],
                     plan: dict[str, dict], title: str):
    """The skill maps (lat, lon), zonal means (lat) and global totals (year) as a CF Dataset."""
    grid = output_grid(group)
    with quiet_zarr():
        src = with_bounds(xr.open_zarr(group.store, zarr_format=3, consolidated=True))
    coords = {k: xr.Variable(src[k].dims, np.asarray(src[k].values), dict(src[k].attrs))
              for k in ("lat", "lon", "lat_bnds", "lon_bnds", "cell_area", "crs") if k in src.variables}
    what = {"nse": ("1", "Nash-Sutcliffe efficiency"), "kge": ("1", "Kling-Gupta efficiency"),
            "r": ("1", "Pearson correlation"), "n": ("1", "observations compared")}
    data = {}
    for stream, mets in skill.items():
        units = udunits(plan[stream]["units"])
        for k, v in mets.items():
            u, long = what.get(k, (units, "mean bias (simulated - observed)"))
            data[f"{stream}_{k}"] = xr.Variable(
                ("lat", "lon"), to_grid(v, grid),
                {"units": u, "long_name": f"{long} of {stream} per pixel (after warm-up)",
                 "grid_mapping": "crs", "cell_measures": "area: cell_area"})
    for n, z in totals["zonal_means"].items():
        data[f"zonal_{n}"] = xr.Variable("lat", z.astype(np.float32), {
            "units": totals["zonal_units"][n],
            "long_name": f"area-weighted zonal mean of the time-mean {n} (after warm-up)"})
    years = np.asarray(totals["years"], np.int32)
    for n, v in totals["annual"].items():
        data[f"global_total_{n}"] = xr.Variable("year", np.asarray(v, np.float64), {
            "units": "Pg yr-1", "long_name": f"global annual total {n}, as carbon (PgC yr-1)",
            "comment": totals["arithmetic"]})
    coords["year"] = xr.Variable("year", years, {"long_name": "calendar year", "units": "1"})
    history = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} created by differland evaluate"
    return xr.Dataset(data, coords=coords, attrs={"Conventions": "CF-1.8", "title": title,
                                                  "history": history, **provenance.record()})


def write_products(loc: Location, ds: xr.Dataset) -> None:
    """Write the products store at ``loc``, replacing only a products store we wrote before."""
    if loc.check_replaceable(PRODUCTS_KIND, overwrite=True):
        loc.clear_owned(PRODUCTS_KIND)
    loc.claim(PRODUCTS_KIND, ["zarr.json", *(str(n) for n in ds.variables)])
    with quiet_zarr():
        ds.to_zarr(zarr_store(loc, read_only=False), mode="a", zarr_format=3,
                   consolidated=True)


def paper_map_dataset(group, maps: dict[str, Any]) -> xr.Dataset:
    """The skill maps of :func:`differland_dist.evaluation.paper.paper_conventions` as CF
    variables: ``paper_<metric>_<map>`` on the output's (lat, lon) grid, ``paper_nbe_<map>`` on (lat_4x5, lon_4x5) with its own
    coordinates and bounds. Coarse coordinates carry no latitude/longitude standard_name (the
    grid mapping of the fine grid requires exactly one of each); their units identify them."""
    grid = output_grid(group)
    data: dict[str, xr.Variable] = {}
    coords: dict[str, xr.Variable] = {}

    def attrs(metric: str, k: str, where: str) -> dict[str, str]:
        u = udunits(maps["units"][metric])
        per_year = "yr-1" if u in ("1", "") else f"{u} yr-1"
        what = {"r_monthly": ("1", "correlation (evaluate_performance.py's lag_linregress_3D) of the "
                                   "monthly series"),
                "rmse_monthly": (u, "root mean squared difference of the monthly series"),
                "r_annual": ("1", "correlation of the calendar-year means"),
                "rmse_annual": (u, "root mean squared difference of the calendar-year means"),
                "r_anomaly": ("1", "correlation of the anomalies (linear trend, then mean seasonal "
                                   "cycle removed)"),
                "rmse_anomaly": (u, "root mean squared difference of the anomalies"),
                "r2_monthly": ("1", "r2_score(simulated, observed) of the monthly series, as "
                                    "evaluate_performance.py's r2 maps"),
                "trend_sim": (per_year, "linear trend of the simulated monthly series"),
                "trend_p_sim": ("1", "two-sided p-value of the simulated trend"),
                "trend_obs": (per_year, "linear trend of the observed monthly series"),
                "trend_p_obs": ("1", "two-sided p-value of the observed trend"),
                "n_obs": ("1", "months observed and simulated")}[k]
        return {"units": what[0], "long_name": f"{what[1]} of {metric} {where}, after the paper's "
                "warm-up (evaluate --conventions paper)"}

    for metric, mm in maps["pixel"].items():
        for k, v in mm.items():
            data[f"paper_{metric}_{k}"] = xr.Variable(
                ("lat", "lon"), to_grid(v, grid),
                {**attrs(metric, k, "per pixel"), "grid_mapping": "crs",
                 "cell_measures": "area: cell_area"})
    if maps["coarse"]:
        g = skill_maps.coarse_grid()
        coords["lat_4x5"] = xr.Variable("lat_4x5", g["lat"].astype(np.float32), {
            "units": "degrees_north", "long_name": "latitude of the 4x5-degree cell centre",
            "bounds": "lat_4x5_bnds"})
        coords["lon_4x5"] = xr.Variable("lon_4x5", g["lon"].astype(np.float32), {
            "units": "degrees_east", "long_name": "longitude of the 4x5-degree cell centre",
            "bounds": "lon_4x5_bnds"})
        coords["lat_4x5_bnds"] = xr.Variable(("lat_4x5", "nv"), g["lat_bnds"].astype(np.float32))
        coords["lon_4x5_bnds"] = xr.Variable(("lon_4x5", "nv"), g["lon_bnds"].astype(np.float32))
        for metric, mm in maps["coarse"].items():
            for k, v in mm.items():
                data[f"paper_{metric}_{k}"] = xr.Variable(
                    ("lat_4x5", "lon_4x5"), skill_maps.to_coarse_grid(v, maps["cells"]),
                    attrs(metric, k, "per 4x5-degree cell (plain mean of its pixels' finite values)"))
    return xr.Dataset(data, coords=coords)
