"""``evaluate --conventions paper``: scores and skill maps as the paper's
``evaluate_performance.py`` makes them (:func:`paper_conventions`), read in blocks of whole
patches; the scores themselves are :mod:`~differland_dist.evaluation.paper_scores` (the
project's gap-aware versions) and :mod:`~differland_dist.evaluation.paper_conventions` (the
reference's exact numbers)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from differland_dist.config import ExperimentConfig
from differland_dist.data.store import PixelStore
from differland_dist.errors import DifferlandError
from differland_dist.evaluation.paper_conventions import KEYS_NOTE, ReferenceScores, reference_units
from differland_dist.evaluation import skill_maps
from differland_dist.evaluation.blocks import Blocks, obs_pair, obs_vars, output_times, patch_blocks
from differland_dist.evaluation.compare import stream_plan
from differland_dist.evaluation.paper_scores import (
    PAPER_ANNUAL, PAPER_COARSE_MAPS, PAPER_PIXEL_MAPS, PAPER_STREAMS, PAPER_WARM_UP,
    PAPER_WATER_THRESHOLD, PaperLayout, PaperScores, paper_units)
from differland_dist.evaluation.recovery import finite_median
from differland_dist.evaluation.streams import SPLITS, model_side, rules

log = logging.getLogger(__name__)

SKILL_MAPS_RECIPE = (
    "per pixel after the warm-up (skill_maps module, docs/paper.md): r = the "
    "reference's lag_linregress_3D correlation, rmse over common steps; monthly, "
    "calendar-year means, anomalies (linear trend then mean seasonal cycle "
    "removed); trend = least-squares slope per year of each side, p two-sided "
    "(t, n-2 dof); nbe on 4x5-degree cells (plain mean of the finite pixels)")


def map_summary(maps: dict[str, np.ndarray], codes: np.ndarray | None) -> dict[str, dict]:
    """map name -> median over its finite values (all, and per split for pixel maps)."""
    out = {}
    for k, v in maps.items():
        e = {"median": finite_median(v)}
        if codes is not None:
            for code, sp in enumerate(SPLITS):
                e[f"median_{sp}"] = finite_median(v[codes == code])
        out[k] = e
    return out


@dataclass
class _PaperPass:
    """The state of one pass over the blocks: the compared streams (stream -> published
    metric name), their scores per split (ours and the reference's), the pixel skill maps
    (metric -> map -> (N,)), the coarse streams' cell means, and the calendar after the
    warm-up."""

    store: PixelStore
    plan: dict
    active: dict[str, str]
    codes: np.ndarray
    warm_up: int
    layout: PaperLayout
    accs: dict
    refs: dict
    pix_maps: dict
    coarse: dict
    cells: np.ndarray | None
    year: np.ndarray
    month: np.ndarray


def _start(store: PixelStore, group, cfg: ExperimentConfig, codes: np.ndarray, warm_up: int,
           water_threshold: float, out: dict) -> _PaperPass:
    """The streams compared (those not compared noted in ``out["streams"]``) and empty
    accumulators."""
    plan = stream_plan(cfg, store, list(set(dict(group.attrs).get("series", []))))
    active = {}
    for name, metric in PAPER_STREAMS.items():
        entry = plan.get(name)
        if entry is None or "note" in entry:
            out["streams"][metric] = {"note": (entry or {}).get("note", "not a stream")}
        else:
            active[name] = metric
    spy, N = int(store.steps_per_year), store.n_pixels
    year, month = skill_maps.calendar(output_times(group)[warm_up:], spy, first_step=warm_up)
    coarse_names = [n for n in PAPER_COARSE_MAPS if n in active]
    cells = (skill_maps.cell_index(store.array("lat")[:], store.array("lon")[:])
             if coarse_names else None)
    return _PaperPass(
        store=store, plan=plan, active=active, codes=codes, warm_up=warm_up,
        layout=PaperLayout(int(store.attrs.get("max_patch_size", 320)), spy, water_threshold),
        accs={name: [PaperScores() for _ in SPLITS] for name in active},
        refs={name: [ReferenceScores() for _ in SPLITS] for name in active},
        pix_maps={PAPER_STREAMS[n]: {k: np.full(N, np.nan, np.float32) for k in skill_maps.MAPS}
                  for n in PAPER_PIXEL_MAPS if n in active},
        coarse={n: skill_maps.CoarseMeans(cells, store.n_time - warm_up) for n in coarse_names},
        cells=cells, year=year, month=month)


def _add_block(run: _PaperPass, reader: Blocks, s: slice) -> None:
    """Read one block of whole patches; add its units to every stream's scores per split,
    its pixels to the skill maps and its cells to the coarse means."""
    rule_of = rules()
    store, wu = run.store, run.warm_up
    P, T, spy = s.stop - s.start, store.n_time, int(store.steps_per_year)
    v = reader.obs(obs_vars(run.plan, run.active), s)
    series = reader.series(sorted({x for n in run.active for x in rule_of[n].series}), s)
    codes_b, patch_b = run.codes[s], np.asarray(store.patch)[s]
    for name in run.active:
        rule = rule_of[name]
        val, w = obs_pair(v, run.plan[name]["product"], P, T)
        sim = model_side(rule, series)
        val, w, sim = val[:, wu:], w[:, wu:], sim[:, wu:]
        for code in range(len(SPLITS)):
            sel = codes_b == code
            if sel.any():
                units = paper_units(name, rule, val, w, sim, sel, patch_b, run.layout)
                run.accs[name][code].add(*units)
                run.refs[name][code].add(*(reference_units(val[sel], sim[sel], spy)
                                           if name in PAPER_ANNUAL else units))
        if PAPER_STREAMS[name] in run.pix_maps:
            for k, x in skill_maps.block_maps(sim, val, run.year, run.month, spy).items():
                run.pix_maps[PAPER_STREAMS[name]][k][s] = x
        if name in run.coarse:
            run.coarse[name].add({"sim": sim, "obs": val}, run.cells[s])


def _skill_maps(run: _PaperPass) -> tuple[dict, dict, dict]:
    """(coarse maps: metric -> map -> (C,), units: metric -> stream units, the JSON summary)."""
    spy = int(run.store.steps_per_year)
    coarse_maps = {}
    for name, cm in run.coarse.items():
        means = cm.result()
        coarse_maps[PAPER_STREAMS[name]] = skill_maps.block_maps(means["sim"], means["obs"],
                                                                 run.year, run.month, spy)
    units = {PAPER_STREAMS[n]: run.plan[n]["units"] for n in run.active}
    summary = {
        "recipe": SKILL_MAPS_RECIPE,
        "pixel": {m: map_summary(x, run.codes) for m, x in run.pix_maps.items()},
        "coarse_4x5": {PAPER_STREAMS[n]: {**map_summary(coarse_maps[PAPER_STREAMS[n]], None),
                                          "n_cells": int(cm.cells.size)}
                       for n, cm in run.coarse.items()},
        "units": units}
    return coarse_maps, units, summary


def paper_conventions(store: PixelStore, group, cfg: ExperimentConfig, codes: np.ndarray,
                      warm_up: int = PAPER_WARM_UP,
                      water_threshold: float = PAPER_WATER_THRESHOLD, block_pixels: int = 4096,
                      maps: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scores and skill maps as the paper's ``evaluate_performance.py`` makes them, after a
    ``warm_up``-month warm-up (24, whatever the run's loss used).

    Scores per split and stream (:func:`metrics.paper_scores`: flat and spatial NSE, RMSE, MAE,
    r, slope, intercept, and mean / median / std of the per-unit temporal NSE and RMSE):

    * pixel streams (lai, vod, sif, et_gleam monthly, as the reference scores them even where
      the loss compares annual means; biomass as annual means of whole years where every
      month is observed): per pixel, unobserved steps NaN;
    * nbe and fire: per patch, the weight-averaged patch series;
    * ewt (water): per patch, the model's anomaly (centred per pixel) and the observations,
      each averaged over the patch padded to the store's ``max_patch_size`` rows (320 on the
      paper's driver), and masked where the mean weight over those rows is below 0.7.

    Skill maps (:mod:`differland_dist.evaluation.skill_maps`) of every pixel: for each stream of
    :data:`PAPER_PIXEL_MAPS` present, every map of ``skill_maps.MAPS`` from the monthly series;
    for nbe, the same maps of the 4° x 5° cell means. With ``maps`` (a dict), it receives
    ``pixel``: metric name -> map -> (N,) float32, ``coarse``: metric -> map -> (C,) float32,
    ``cells``: (C,) flat 4° x 5° cell indices, and ``units``: metric -> stream units. The JSON
    result holds the maps' medians under ``skill_maps``.

    Reads the store and the output in blocks of whole patches of about ``block_pixels`` pixels
    (every stream's observations and series of one block at a time)."""
    if warm_up >= store.n_time:
        raise DifferlandError(f"paper conventions: the {warm_up}-month warm-up leaves nothing of "
                              f"the store's {store.n_time} steps")
    out: dict[str, Any] = {
        "source": "evaluate_performance.py of JianingFang/DifferLand_Global",
        "warm_up": int(warm_up), "water_threshold": float(water_threshold),
        "padded_patch_size": int(store.attrs.get("max_patch_size", 320)), "streams": {},
        "keys": KEYS_NOTE}
    run = _start(store, group, cfg, codes, warm_up, water_threshold, out)
    reader = Blocks(store, group)
    t0 = time.perf_counter()
    try:
        for s in patch_blocks(store, block_pixels):
            _add_block(run, reader, s)
            log.info("paper conventions: pixels %d / %d (%.1f s)", s.stop, store.n_pixels,
                     time.perf_counter() - t0)
    finally:
        reader.close()
    rule_of = rules()
    for name, metric in run.active.items():
        res: dict[str, Any] = {"stream": name, "product": run.plan[name]["product"],
                               "level": rule_of[name].level}
        for code, sp in enumerate(SPLITS):
            res[sp] = {**run.accs[name][code].result(), "reference": run.refs[name][code].result()}
        out["streams"][metric] = res
    coarse_maps, units, out["skill_maps"] = _skill_maps(run)
    if maps is not None:
        first = next(iter(run.coarse.values()), None)
        maps.update(pixel=run.pix_maps, coarse=coarse_maps, units=units,
                    cells=first.cells if first is not None else np.empty(0, np.int64))
    return out
