"""The evaluation's figures (PNG bytes by file name under ``figures/``): parameter maps,
observed-vs-simulated density per stream, series at a few held-out pixels, training curves,
recovery, and the carbon products' skill maps, zonal means and global totals."""

from __future__ import annotations

import numpy as np

from differland_dist.config import ExperimentConfig
from differland_dist.data import schema, splits
from differland_dist.data.store import PixelStore, quiet_zarr
from differland_dist.evaluation import carbon, plots
from differland_dist.evaluation.blocks import obs_pair, output_grid, output_times
from differland_dist.evaluation.metrics_log import read_training_log
from differland_dist.evaluation.options import EvaluationOptions
from differland_dist.evaluation.streams import SPLITS
from differland_dist.vocabulary.series import map_var
from differland_dist.vocabulary.grid import to_grid
from differland_dist.storage.location import Location
from differland_dist.vocabulary.units import udunits

#: the panels of a pixel's series figure: (output series, the stream observing it or None)
TS_PANELS = (("lai", "lai"), ("sif", "sif"), ("gpp", "gpp_flux"), ("reco", "reco_flux"),
             ("et", "et_gleam"), ("nbe", "nbe"), ("pool_water", None))


def series_pixels(store: PixelStore, n: int, split: np.ndarray | None = None) -> np.ndarray:
    """Up to n held-out (dev or test) pixels (all pixels if none is held out) spread over
    latitude."""
    if n <= 0:
        return np.empty(0, np.int64)
    cand = np.flatnonzero((store.split if split is None else split) != splits.TRAIN)
    if cand.size == 0:
        cand = np.arange(store.n_pixels)
    lat = np.asarray(store.array("lat")[:], np.float64)[cand]
    order = cand[np.argsort(lat, kind="stable")]
    pick = np.unique(np.linspace(0, order.size - 1, min(n, order.size)).round().astype(int))
    return np.sort(order[pick])


def parameter_maps(group, map_params) -> dict[str, bytes]:
    """``parameter_maps.png`` of a gridded output (none without maps or parameters)."""
    if not dict(group.attrs).get("has_maps") or not map_params:
        return {}
    with quiet_zarr():
        maps = {p: np.asarray(group[map_var(p)][:]) for p in map_params}
        units = {p: group[map_var(p)].attrs.get("units", "") for p in map_params}
        return {"parameter_maps.png": plots.parameter_maps(
            maps, np.asarray(group["lat"][:]), np.asarray(group["lon"][:]), units)}


def scatter_figures(plan: dict, samples: dict) -> dict[str, bytes]:
    """``scatter_<stream>.png``: observed-vs-simulated density of each stream with pairs."""
    figs = {}
    for name, entry in plan.items():
        if name in samples and any(samples[name][sp][0].size for sp in SPLITS):
            figs[f"scatter_{name}.png"] = plots.density_scatter(
                samples[name], name, entry["units"], {sp: entry[sp]["flat"] for sp in SPLITS})
    return figs


def _pixel_panels(store: PixelStore, group, plan: dict, px: int) -> list[tuple]:
    """(series, units, simulated (T,), observed (T,) or None) of one pixel, per panel."""
    series = set(dict(group.attrs).get("series", []))
    s = slice(px, px + 1)
    panels = []
    for sname, stream in TS_PANELS:
        if sname not in series:
            continue
        with quiet_zarr():
            sim = np.asarray(group[sname][s])[0]
            units = group[sname].attrs.get("units", "")
        obs = None
        if stream and "note" not in plan[stream] and plan[stream]["kind"] == "monthly":
            prod = plan[stream]["product"]
            v = {k: np.asarray(store.array(k)[s]) for k in
                 (schema.obs_value_name(prod), schema.obs_weight_name(prod))}
            obs = obs_pair(v, prod, 1, store.n_time)[0][0]
        panels.append((sname, units, sim, obs))
    return panels


def series_figures(store: PixelStore, group, cfg: ExperimentConfig, plan: dict, n: int,
                   codes: np.ndarray) -> dict[str, bytes]:
    """``series_pixel<i>.png``: the series of up to ``n`` held-out pixels, observed beside them."""
    figs = {}
    times = output_times(group)
    for px in series_pixels(store, n, codes):
        panels = _pixel_panels(store, group, plan, int(px))
        if panels:
            lat, lon = float(store.array("lat")[px]), float(store.array("lon")[px])
            figs[f"series_pixel{int(px)}.png"] = plots.time_series(
                times, panels, f"pixel {int(px)} ({lat:.2f}, {lon:.2f}), "
                f"{splits.NAMES[int(codes[px])]} pixel; warm-up shaded",
                warm_up=int(cfg.loss.warm_up))
    return figs


def training_figures(run_dir: Location | None) -> dict[str, bytes]:
    """``training_curves.png`` from the run's ``metrics.jsonl`` (none without records)."""
    tlog = read_training_log(run_dir) if run_dir is not None else None
    if tlog is None or not (tlog.train or tlog.held_out):
        return {}
    return {"training_curves.png": plots.training_curves(tlog.train, tlog.held_out, tlog.terms)}


def recovery_figures(recovery: dict | None) -> dict[str, bytes]:
    """``recovery.png``: r² per parameter, test and train, physical and unbounded scale."""
    if recovery is None:
        return {}
    bars = {f"{sp}{' (unbounded)' if key == 'r2_unbounded' else ''}":
            {n: v[key] for n, v in recovery[sp]["parameters"].items()}
            for sp in ("test", "train") for key in ("r2", "r2_unbounded")}
    return {"recovery.png": plots.recovery_bars(bars)}


def make_figures(store: PixelStore, group, cfg: ExperimentConfig, plan: dict, samples: dict,
                 options: EvaluationOptions, run_dir: Location | None, recovery: dict | None,
                 split: np.ndarray | None = None) -> dict[str, bytes]:
    """file name (under figures/) -> PNG bytes (``split``: per-pixel split codes of the run)."""
    codes = store.split if split is None else split
    return {**parameter_maps(group, options.map_params), **scatter_figures(plan, samples),
            **series_figures(store, group, cfg, plan, options.n_series_pixels, codes),
            **training_figures(run_dir), **recovery_figures(recovery)}


def carbon_figures(group, skill: dict, totals: dict, plan: dict) -> dict[str, bytes]:
    """``skill_<stream>.png`` (NSE, KGE, r, bias maps), ``zonal_means.png``, ``global_totals.png``."""
    figs: dict[str, bytes] = {}
    grid = output_grid(group)
    lat, lon = grid.lat, grid.lon
    for stream, mets in skill.items():
        if not np.isfinite(mets["bias"]).any():
            continue
        maps = {f"{stream} {k.upper() if k != 'bias' else k}": to_grid(mets[k], grid)
                for k in carbon.SKILL_METRICS}
        units = {f"{stream} bias": udunits(plan[stream]["units"])}
        figs[f"skill_{stream}.png"] = plots.parameter_maps(maps, lat, lon, units)
    if totals["zonal_means"]:
        figs["zonal_means.png"] = plots.zonal_means(lat, totals["zonal_means"], totals["zonal_units"])
    if totals["annual"] and totals["years"]:
        figs["global_totals.png"] = plots.global_totals(totals["years"], totals["annual"])
    return figs
