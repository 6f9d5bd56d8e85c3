"""``differland evaluate``: observation-stream metrics, parameter recovery and figures.

The target is an inference output store (its attributes name the input store, the checkpoint
and the training config) or a run directory; for a run directory the output
``RUN_DIR/inference.zarr`` is made first with the inference pipeline if it is missing or
partial (resuming it) or made from an older network of the run (replacing it), so evaluation
always reads stored model output, block by block.

What is written to the output directory (default: ``RUN_DIR/evaluation`` for a run directory,
``<output without .zarr>_evaluation`` beside an output store):

* ``evaluation.json``: inputs, per stream (of ``differland_dist.vocabulary.streams``) and split (train / dev / test:
  the split the run trained with, i.e. its own draw when ``data.split_seed`` is set) the
  flat, spatial and temporal metrics (:mod:`differland_dist.evaluation.metrics`; NaN as null),
  and, for synthetic stores, the recovery of the true parameters per parameter;
* ``evaluation.md``: the same as Markdown tables;
* ``figures/*.png``: parameter maps, observed-vs-simulated density per stream, series at a few
  held-out pixels, training curves (from ``RUN_DIR/metrics.jsonl`` when found) and recovery.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import xarray as xr

from differland_dist.common import provenance
from differland_dist.vocabulary import streams as streams_table
from differland_dist.config import ExperimentConfig, from_dict
from differland_dist.data import schema, splits
from differland_dist.data.rows import RowReader, with_retries
from differland_dist.data.store import PixelStore, quiet_zarr, resolve, zarr_store
from differland_dist.errors import DifferlandError, OutputMismatchError
from differland_dist.evaluation import carbon as C_
from differland_dist.evaluation import metrics as M
from differland_dist.evaluation import paper_conventions as PC
from differland_dist.evaluation import plots, report
from differland_dist.evaluation import skill_maps as SM
from differland_dist.evaluation.streams import (
    SPLITS, PatchAccumulator, UnitAccumulator, comparable, model_side, pairs, rules)
from differland_dist.inference import output as out_mod
from differland_dist.inference.export import with_bounds
from differland_dist.inference.pipeline import InferenceOptions, run_inference
from differland_dist.storage.location import Location, join
from differland_dist.model import calendar
from differland_dist.model.parameters import all_bounds, to_bounded, to_unbounded
from differland_dist.runs.layout import resolve_checkpoint

log = logging.getLogger(__name__)

DEFAULT_MAP_PARAMS = ("canopy_efficiency", "f_gpp", "LCMA", "field_capacity", "tor_wood",
                      "init_som")
INFERENCE_NAME = "inference.zarr"


@dataclass(frozen=True)
class EvaluationOptions:
    """block_pixels: pixels read per block (rounded to whole chunks); map_params: parameters
    mapped; n_series_pixels: held-out pixels whose series are plotted; scatter_points: pairs
    kept per stream and split for the density plots; min_obs_temporal: observations a unit
    needs for the temporal view; figures: write the PNG figures."""

    block_pixels: int = 4096
    map_params: tuple[str, ...] = DEFAULT_MAP_PARAMS
    n_series_pixels: int = 4
    scatter_points: int = 50_000
    min_obs_temporal: int = 3
    figures: bool = True
    #: "paper": also score as the paper's evaluate_performance.py does (:func:`paper_conventions`)
    conventions: str | None = None
    #: the paper conventions' warm-up in steps (the reference's 24 months)
    paper_warm_up: int = 24

    def __post_init__(self):
        bad = [p for p in self.map_params if p not in out_mod.PARAM_NAMES]
        if bad:
            raise DifferlandError(f"unknown parameter(s) to map {bad}; known: "
                                  f"{', '.join(out_mod.PARAM_NAMES)}")
        if self.conventions not in (None, "paper"):
            raise DifferlandError(f"conventions: {self.conventions!r}, expected 'paper' or none")
        if self.block_pixels < 1 or self.n_series_pixels < 0 or self.scatter_points < 1:
            raise DifferlandError("block_pixels and scatter_points must be >= 1, n_series_pixels >= 0")


# -- targets -------------------------------------------------------------------------------------
def find_run_dir(attrs: dict, so: dict | None) -> str | None:
    """The run directory of an output's checkpoint (holding ``metrics.jsonl``), if any."""
    cands = []
    ck = str(attrs.get("checkpoint", ""))
    f = str(attrs.get("checkpoint_file", ""))
    if ck.startswith("[") or f.startswith("["):  # an ensemble's JSON list: no one run dir
        return None
    if ck and not ck.endswith(".npz"):
        cands.append(ck)
    if f:
        parent = posixpath.dirname(f.rstrip("/"))
        if posixpath.basename(parent) == "checkpoints":
            cands.append(posixpath.dirname(parent))
        cands.append(parent)
    for c in cands:
        if c and Location(join(c, "metrics.jsonl"), so).exists():
            return c
    return None


def default_out_dir(target: str, is_run_dir: bool) -> str:
    """Where results go by default: ``RUN_DIR/evaluation`` or ``<store>_evaluation``."""
    t = target.rstrip("/")
    if is_run_dir:
        return join(t, "evaluation")
    return (t[: -len(".zarr")] if t.endswith(".zarr") else t) + "_evaluation"


def resolve_target(target: str, store: str | None, so: dict | None, out_so: dict | None,
                   inference=None) -> tuple[str, str | None, bool]:
    """(output store URL, run directory or None, whether the target is a run directory).

    For a run directory, inference runs into ``RUN_DIR/inference.zarr`` if that is missing or
    partial (resumed), or was made from another network than the run's current one (replaced).
    """
    attrs = out_mod.read_attrs(target, out_so)
    if attrs is not None:
        return target, find_run_dir(attrs, so), False
    try:
        resolve_checkpoint(Location(target, so))
    except DifferlandError:
        raise DifferlandError(f"{target}: neither an inference output store nor a run directory "
                              "with a network or checkpoints") from None
    run_dir = posixpath.dirname(target) if target.endswith(".npz") else target.rstrip("/")
    output = join(run_dir, INFERENCE_NAME)
    opts = inference or InferenceOptions()
    try:  # a no-op when the output is complete and made from the run's current network
        run_inference(target, output, store, options=opts, storage_options=so,
                      out_storage_options=out_so)
    except OutputMismatchError as e:
        log.warning("%s; replacing it (the run's network changed)", e)
        run_inference(target, output, store, options=opts, storage_options=so,
                      out_storage_options=out_so, overwrite=True)
    return output, run_dir, True


# -- reading -------------------------------------------------------------------------------------
class _Blocks:
    """Reads pixel blocks of observations (input store, through its row reader) and of
    series (the inference output, through zarr)."""

    def __init__(self, store: PixelStore, group, threads: int = 8):
        self.store, self.group = store, group
        self.rows = RowReader(store, max_workers=threads)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="eval-read")

    def obs(self, names: Sequence[str], s: slice) -> dict[str, np.ndarray]:
        return self.rows.read(names, s)

    def series(self, names: Sequence[str], s: slice) -> dict[str, np.ndarray]:
        with quiet_zarr():
            arrays = [self.group[n] for n in names]
        return dict(zip(names, self.pool.map(
            lambda a: np.asarray(with_retries(lambda: a[s], f"output {a.path}",
                                             fs=getattr(a.store, "fs", None))), arrays)))

    def close(self) -> None:
        self.rows.close()
        self.pool.shutdown(wait=True)


def _obs_pair(v: dict[str, np.ndarray], product: str, P: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """(value, weight) (P, T) float64 of a product, gaps as weight 0 (static products broadcast)."""
    val = np.asarray(v[schema.obs_value_name(product)], np.float64)
    w = np.asarray(v[schema.obs_weight_name(product)], np.float64)
    if val.ndim == 1:
        val, w = (np.broadcast_to(a[:, None], (P, T)) for a in (val, w))
    ok = np.isfinite(val) & (w > 0)
    return np.where(ok, val, np.nan), np.where(ok, w, 0.0)


# -- the comparison --------------------------------------------------------------------------------
def stream_plan(cfg: ExperimentConfig, store: PixelStore, series: Sequence[str]) -> dict[str, dict]:
    """Per stream: product, units, level, kind and either ``note`` (why it is not compared)
    or nothing (compared)."""
    have = set(store.array_names)
    plan = {}
    rule_of = rules()
    for st in streams_table.label_order():
        rule = rule_of[st.name]
        product = cfg.data.products.get(st.name)
        entry: dict[str, Any] = {"product": product, "units": st.units, "level": rule.level,
                                 "kind": rule.kind, "model": " + ".join(rule.series)}
        missing = [n for n in rule.series if n not in series]
        if product is None:
            entry["note"] = "switched off in the config"
        elif schema.obs_value_name(product) not in have or schema.obs_weight_name(product) not in have:
            entry["note"] = f"product {product!r} not in the store"
        elif missing:
            entry["note"] = f"output lacks series {missing}"
        plan[st.name] = entry
    return plan


def compare(store: PixelStore, group, cfg: ExperimentConfig, options: EvaluationOptions,
            skill: dict[str, dict[str, np.ndarray]] | None = None, split: np.ndarray | None = None
            ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Metrics per stream (see :func:`stream_plan`) and sampled pairs for the scatter plots.

    With ``skill`` (a dict), it also receives per pixel-level stream compared the per-pixel
    skill (``carbon.pixel_skill``): stream -> metric -> (N,) float32."""
    attrs = dict(group.attrs)
    series_names = list(attrs.get("series", []))
    plan = stream_plan(cfg, store, series_names)
    active = [s for s, e in plan.items() if "note" not in e]
    rule_of = rules()
    N, T = store.n_pixels, store.n_time
    wu = int(cfg.loss.warm_up)
    spy = int(store.steps_per_year)
    if wu >= T:
        raise DifferlandError(f"warm-up ({wu} steps) leaves nothing of the {T} steps to evaluate")
    Tw = T - wu
    n_x = {"monthly": Tw, "anomaly": Tw, "annual": Tw // spy, "static": 1}
    kw = {"sample_cap": options.scatter_points, "min_obs_temporal": options.min_obs_temporal}
    patch_ids = store.patch_ids
    codes = store.split if split is None else split
    patch_split = np.array([codes[store.patch_slices[int(p)].start] for p in patch_ids])
    accs: dict[str, Any] = {}
    for s in active:
        rule = rule_of[s]
        accs[s] = (PatchAccumulator(patch_ids, patch_split, n_x[rule.kind], **kw)
                   if rule.level == "patch" else UnitAccumulator(**kw))
    obs_vars = sorted({v for s in active for v in (schema.obs_value_name(plan[s]["product"]),
                                                    schema.obs_weight_name(plan[s]["product"]))})
    need_series = sorted({n for s in active for n in rule_of[s].series})
    C = int(attrs["chunk_pixels"])
    bp = max(C, (options.block_pixels // C) * C)
    if skill is not None:
        for name in active:
            if rule_of[name].level == "pixel":
                skill[name] = {k: np.full(N, np.nan, np.float32) for k in ("n", *C_.SKILL_METRICS)}
    reader = _Blocks(store, group)
    t0 = time.perf_counter()
    try:
        for a in range(0, N, bp):
            s = slice(a, min(a + bp, N))
            P = s.stop - s.start
            v = reader.obs(obs_vars, s)
            sim_series = {k: x[:, wu:] for k, x in reader.series(need_series, s).items()}
            split_s, patch = codes[s], store.patch[s]
            for name in active:
                rule = rule_of[name]
                val, w = _obs_pair(v, plan[name]["product"], P, T)
                o, sm, m = comparable(rule, val[:, wu:], w[:, wu:], model_side(rule, sim_series), spy)
                if rule.level == "patch":
                    accs[name].add(o, sm, m, patch)
                else:
                    accs[name].add(o, sm, m, split_s)
                    if skill is not None:
                        for k, x in C_.pixel_skill(o, sm, m, options.min_obs_temporal).items():
                            skill[name][k][s] = x
            log.info("evaluated pixels %d / %d (%.1f s)", s.stop, N, time.perf_counter() - t0)
    finally:
        reader.close()
    samples: dict[str, dict] = {}
    for name, entry in plan.items():
        if name in accs:
            acc = accs[name]
            if isinstance(acc, PatchAccumulator):
                res, unit_acc = acc.result()
            else:
                res, unit_acc = acc.result(), acc
            entry.update(res)
            samples[name] = pairs(unit_acc)
        else:
            empty = {**M.empty_scores(), "n_units": 0}
            entry.update({sp: {v: dict(empty) for v in report.VIEWS} for sp in SPLITS})
    return plan, samples


def _unbounded(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The network's unbounded scale of physical values (``to_unbounded``, float64), with
    values on or past a bound moved just inside it (the transform is infinite there)."""
    return to_unbounded(np.clip(np.asarray(p, np.float64), lo * (1 + 1e-7), hi * (1 - 1e-7)), lo, hi)


def _median(values) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def parameter_recovery(true: np.ndarray, est: np.ndarray, split: np.ndarray,
                       names: Sequence[str] = out_mod.PARAM_NAMES,
                       true_x: np.ndarray | None = None,
                       lat: np.ndarray | None = None) -> dict[str, Any]:
    """Recovery of true parameters (P, 40) by estimates (P, 40) per split: per parameter
    ``r2`` (1 - SSE/SST vs the 1:1 line, physical values), ``r2_unbounded`` (same on the
    network's unbounded scale; ``true_x`` when given), ``r``, ``n``; and median ``r2``.
    With ``lat`` (P,), phenology dates are compared as phases of the local calendar
    (:mod:`differland_dist.model.calendar`: a date a year later is the same model)."""
    lo, hi = all_bounds()
    xt = _unbounded(true, lo, hi) if true_x is None else np.asarray(true_x, np.float64)
    xe = _unbounded(est, lo, hi)
    if lat is not None:
        centre = calendar.centres(xt, lat, names)  # the estimate's dates in the truth's window
        xt, xe = calendar.align(xt, lat, names, centre), calendar.align(xe, lat, names, centre)
        dates = calendar.date_columns(names)
        true, est = np.array(true, np.float64), np.array(est, np.float64)
        true[:, dates] = to_bounded(xt[:, dates], lo[dates], hi[dates])
        est[:, dates] = to_bounded(xe[:, dates], lo[dates], hi[dates])
    out = {}
    for code, sp in enumerate(SPLITS):
        sel = np.asarray(split) == code
        phys = M.recovery(true[sel], est[sel], names)
        unb = M.recovery(xt[sel], xe[sel], names)
        params = {n: {"r2": phys[n]["r2"], "r2_unbounded": unb[n]["r2"], "r": phys[n]["r"],
                      "n": phys[n]["n"]} for n in names}
        out[sp] = {"parameters": params,
                   "median_r2": _median([v["r2"] for v in params.values()]),
                   "median_r2_unbounded": _median([v["r2_unbounded"] for v in params.values()])}
    return out


def _read_params(group) -> np.ndarray:
    with quiet_zarr():
        return np.stack([np.asarray(group[out_mod.param_var(n)][:], np.float64)
                         for n in out_mod.PARAM_NAMES], axis=1)


def recovery_from_store(store: PixelStore, group, split: np.ndarray | None = None) -> dict | None:
    """:func:`parameter_recovery` of the output's parameters, for stores holding
    ``true_params`` (synthetic stores); None otherwise."""
    if "true_params" not in store.array_names:
        return None
    names = [str(n) for n in np.asarray(store.ds["param"].values)] if "param" in store.array_names \
        else list(out_mod.PARAM_NAMES)
    idx = [names.index(n) for n in out_mod.PARAM_NAMES]
    true = np.asarray(store.array("true_params")[:], np.float64)[:, idx]
    tx = (np.asarray(store.array("true_x")[:], np.float64)[:, idx]
          if "true_x" in store.array_names else None)
    lat = np.asarray(store.array("lat")[:], np.float64)
    return parameter_recovery(true, _read_params(group), store.split if split is None else split,
                              true_x=tx, lat=lat)


# -- the paper's conventions -----------------------------------------------------------------------
PAPER_WARM_UP = 24         # months left out (evaluate_performance.py: --warm_up 12 * 2)
PAPER_WATER_THRESHOLD = 0.7  # water: steps whose mean weight over the padded patch is below
PAPER_EPS = 1e-8           # the weighted patch means' guard (EPS of evaluate_performance.py)
#: published metric name of each stream (monthly streams as they are, biomass annual)
PAPER_STREAMS = {"lai": "lai", "vod": "vod", "sif": "sif", "biomass": "agb", "et_gleam": "et",
                 "nbe": "nbe", "fire": "fire", "ewt": "water"}
#: streams the reference scores as annual means (vod is monthly there, though its loss term
#: compares annual means)
PAPER_ANNUAL = ("biomass",)


def _paper_patch_series(x, w, patch, ids, padded: int, water: bool, thr: float):
    """(patches, T) patch series as evaluate_performance.py forms them from padded batches.

    NBE and fire: sum_p(x w) / (sum_p(w) + EPS) (0 for both sides at unobserved steps, which
    the reference keeps as pairs). Water: the model centred per pixel by its
    weighted time mean (sum_t(x w) / (sum_t(w) + 0.1)), then for model and observations the
    mean over the padded batch of x·w (sum / ``padded``, the batch's 320 rows), both NaN at
    steps whose mean weight over the padded batch is below ``thr``."""
    out = np.full((len(ids), x.shape[1]), np.nan)
    for k, p in enumerate(ids):
        sel = patch == p
        xs, ws = x[sel], w[sel]
        if water:
            out[k] = np.sum(xs * ws, axis=0) / padded
            out[k, np.sum(ws, axis=0) / padded < thr] = np.nan
        else:
            out[k] = np.sum(xs * ws, axis=0) / (np.sum(ws, axis=0) + PAPER_EPS)
    return out


#: streams mapped per pixel (skill maps; ewt as the reference maps it: the raw water pool
#: against the observed anomalies) and the one mapped on the 4° x 5° grid
PAPER_PIXEL_MAPS = ("lai", "vod", "sif", "biomass", "et_gleam", "ewt")
PAPER_COARSE_MAPS = ("nbe",)


class PaperScores:
    """:func:`metrics.paper_scores` over units added block by block: the flat pairs as merged
    :class:`metrics.Moments`, the units' means and per-unit temporal NSE / RMSE kept (one
    value per unit). Equal to ``paper_scores`` of all units at once (to rounding)."""

    def __init__(self):
        self.flat = M.Moments()
        self.n = self.n_units = 0
        self.om: list[np.ndarray] = []
        self.sm: list[np.ndarray] = []
        self.nse: list[float] = []
        self.rmse: list[float] = []

    def add(self, obs: np.ndarray, sim: np.ndarray) -> None:
        """obs, sim: (units, X), NaN where unobserved."""
        obs = np.asarray(obs, np.float64)
        sim = np.asarray(sim, np.float64)
        ok = np.isfinite(obs) & np.isfinite(sim)
        self.n += int(ok.sum())
        self.n_units += int(ok.any(axis=1).sum())
        self.flat = self.flat + M.Moments.of(obs, sim, ok)
        o, s = np.where(ok, obs, np.nan), np.where(ok, sim, np.nan)
        cnt = ok.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            om = np.where(cnt > 0, np.nansum(o, axis=1) / np.maximum(cnt, 1), np.nan)
            sm = np.where(cnt > 0, np.nansum(s, axis=1) / np.maximum(cnt, 1), np.nan)
        sel = np.isfinite(om) & np.isfinite(sm)
        self.om.append(om[sel])
        self.sm.append(sm[sel])
        for i in np.flatnonzero(cnt > 0):
            reg = M._regression(s[i, ok[i]], o[i, ok[i]])
            self.nse.append(reg["nse"])
            self.rmse.append(reg["rmse"])

    def _flat(self) -> dict[str, float]:
        f, nan = self.flat, float("nan")
        if f.n == 0:
            return {k: nan for k in ("nse", "rmse", "mae", "r", "slope", "intercept")}
        slope = f.c_os / f.m2_s if f.m2_s > 0 else nan
        return {"nse": 1 - f.sse / f.m2_o if f.m2_o > 0 else nan, "rmse": float(np.sqrt(f.sse / f.n)),
                "mae": f.sae / f.n,
                "r": f.c_os / float(np.sqrt(f.m2_s * f.m2_o)) if f.m2_s > 0 and f.m2_o > 0 else nan,
                "slope": slope, "intercept": f.mean_o - slope * f.mean_s if f.m2_s > 0 else nan}

    def result(self) -> dict[str, Any]:
        """As :func:`metrics.paper_scores`."""
        cat = lambda parts: np.concatenate(parts) if parts else np.empty(0)  # noqa: E731
        out: dict[str, Any] = {"n": self.n, "n_units": self.n_units, "flat": self._flat(),
                               "spatial": M._regression(cat(self.sm), cat(self.om))}
        for name, v in (("temporal_nse", self.nse), ("temporal_rmse", self.rmse)):
            a = np.asarray(v, np.float64)
            a = a[np.isfinite(a)]
            out[name] = ({"mean": float(a.mean()), "median": float(np.median(a)), "std": float(a.std())}
                         if a.size else {"mean": float("nan"), "median": float("nan"), "std": float("nan")})
        return out


def patch_blocks(store: PixelStore, block_pixels: int) -> list[slice]:
    """Consecutive pixel slices of whole patches (patches are contiguous runs of the pixel
    axis), each about ``block_pixels`` pixels (a larger patch is a block of its own)."""
    runs = sorted(store.patch_slices.values(), key=lambda s: s.start)
    blocks: list[slice] = []
    a = b = None
    for r in runs:
        if a is None:
            a, b = r.start, r.stop
        elif r.stop - a > block_pixels:
            blocks.append(slice(a, b))
            a, b = r.start, r.stop
        else:
            b = r.stop
    if a is not None:
        blocks.append(slice(a, b))
    return blocks


def _paper_units(name: str, rule, val, w, sim, sel, patch, padded: int, spy: int,
                 water_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(obs, sim) units x X of a stream for the pixels ``sel`` of a block of whole patches."""
    if rule.level == "patch":
        ids = np.unique(patch[sel])
        ws = np.where(w > 0, w, 0.0)
        if name == "ewt":
            mean = np.sum(sim * ws, axis=1) / (np.sum(ws, axis=1) + 0.1)
            x_sim = sim - mean[:, None]
        else:
            x_sim = sim
        obs_v = np.nan_to_num(val)
        return (_paper_patch_series(obs_v[sel], ws[sel], patch[sel], ids, padded, name == "ewt",
                                    water_threshold),
                _paper_patch_series(x_sim[sel], ws[sel], patch[sel], ids, padded, name == "ewt",
                                    water_threshold))
    if name in PAPER_ANNUAL:
        Y = val.shape[1] // spy
        n = int(np.count_nonzero(sel))  # explicit: -1 is ambiguous with no whole year (Y = 0)
        obs_y = val[sel, : Y * spy].reshape(n, Y, spy)
        return (np.where(np.all(np.isfinite(obs_y), axis=2), obs_y.mean(axis=2), np.nan),
                sim[sel, : Y * spy].reshape(n, Y, spy).mean(axis=2))
    return val[sel], sim[sel]


def _map_summary(maps: dict[str, np.ndarray], codes: np.ndarray | None) -> dict[str, dict]:
    """map name -> median over its finite values (all, and per split for pixel maps)."""
    out = {}
    for k, v in maps.items():
        e = {"median": _median(v)}
        if codes is not None:
            for code, sp in enumerate(SPLITS):
                e[f"median_{sp}"] = _median(v[codes == code])
        out[k] = e
    return out


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
    spy = int(store.steps_per_year)
    padded = int(store.attrs.get("max_patch_size", 320))
    series_names = set(dict(group.attrs).get("series", []))
    plan = stream_plan(cfg, store, list(series_names))
    rule_of = rules()
    patch = np.asarray(store.patch)
    out: dict[str, Any] = {
        "source": "evaluate_performance.py of JianingFang/DifferLand_Global",
        "warm_up": int(warm_up), "water_threshold": float(water_threshold),
        "padded_patch_size": padded, "streams": {},
        "keys": PC.KEYS_NOTE}
    N, T = store.n_pixels, store.n_time
    active = {}
    for name, metric in PAPER_STREAMS.items():
        entry = plan.get(name)
        if entry is None or "note" in entry:
            out["streams"][metric] = {"note": (entry or {}).get("note", "not a stream")}
        else:
            active[name] = metric
    accs = {name: [PaperScores() for _ in SPLITS] for name in active}
    refs = {name: [PC.ReferenceScores() for _ in SPLITS] for name in active}  # the exact numbers
    obs_vars = sorted({v for n in active for v in (schema.obs_value_name(plan[n]["product"]),
                                                   schema.obs_weight_name(plan[n]["product"]))})
    need = sorted({s for n in active for s in rule_of[n].series})
    year, month = SM.calendar(_times(group)[warm_up:], spy, first_step=warm_up)
    pix_maps = {PAPER_STREAMS[n]: {k: np.full(N, np.nan, np.float32) for k in SM.MAPS}
                for n in PAPER_PIXEL_MAPS if n in active}
    coarse_names = [n for n in PAPER_COARSE_MAPS if n in active]
    if coarse_names:
        cells = SM.cell_index(store.array("lat")[:], store.array("lon")[:])
        coarse = {n: SM.CoarseMeans(cells, T - warm_up) for n in coarse_names}
    reader = _Blocks(store, group)
    t0 = time.perf_counter()
    try:
        for s in patch_blocks(store, block_pixels):
            P = s.stop - s.start
            v = reader.obs(obs_vars, s)
            series = reader.series(need, s)
            codes_b, patch_b = codes[s], patch[s]
            for name in active:
                rule = rule_of[name]
                val, w = _obs_pair(v, plan[name]["product"], P, T)
                sim = model_side(rule, series)
                val, w, sim = val[:, warm_up:], w[:, warm_up:], sim[:, warm_up:]
                for code in range(len(SPLITS)):
                    sel = codes_b == code
                    if sel.any():
                        units = _paper_units(name, rule, val, w, sim, sel, patch_b, padded, spy,
                                             water_threshold)
                        accs[name][code].add(*units)
                        refs[name][code].add(*(PC.reference_units(val[sel], sim[sel], spy)
                                               if name in PAPER_ANNUAL else units))
                if PAPER_STREAMS[name] in pix_maps:
                    for k, x in SM.block_maps(sim, val, year, month, spy).items():
                        pix_maps[PAPER_STREAMS[name]][k][s] = x
                if name in coarse_names:
                    coarse[name].add({"sim": sim, "obs": val}, cells[s])
            log.info("paper conventions: pixels %d / %d (%.1f s)", s.stop, N, time.perf_counter() - t0)
    finally:
        reader.close()
    for name, metric in active.items():
        res: dict[str, Any] = {"stream": name, "product": plan[name]["product"],
                               "level": rule_of[name].level}
        for code, sp in enumerate(SPLITS):
            res[sp] = {**accs[name][code].result(), "reference": refs[name][code].result()}
        out["streams"][metric] = res
    coarse_maps = {}
    for name in coarse_names:
        means = coarse[name].result()
        coarse_maps[PAPER_STREAMS[name]] = SM.block_maps(means["sim"], means["obs"], year, month, spy)
    units = {PAPER_STREAMS[n]: plan[n]["units"] for n in active}
    out["skill_maps"] = {
        "recipe": "per pixel after the warm-up (skill_maps module, docs/paper.md): r = the "
                  "reference's lag_linregress_3D correlation, rmse over common steps; monthly, "
                  "calendar-year means, anomalies (linear trend then mean seasonal cycle "
                  "removed); trend = least-squares slope per year of each side, p two-sided "
                  "(t, n-2 dof); nbe on 4x5-degree cells (plain mean of the finite pixels)",
        "pixel": {m: _map_summary(x, codes) for m, x in pix_maps.items()},
        "coarse_4x5": {PAPER_STREAMS[n]: {**_map_summary(coarse_maps[PAPER_STREAMS[n]], None),
                                          "n_cells": int(coarse[n].cells.size)}
                       for n in coarse_names},
        "units": units}
    if maps is not None:
        maps.update(pixel=pix_maps, coarse=coarse_maps, units=units,
                    cells=coarse[coarse_names[0]].cells if coarse_names else np.empty(0, np.int64))
    return out


def paper_map_dataset(group, maps: dict[str, Any]) -> xr.Dataset:
    """The skill maps of :func:`paper_conventions` as CF variables: ``paper_<metric>_<map>`` on
    the output's (lat, lon) grid, ``paper_nbe_<map>`` on (lat_4x5, lon_4x5) with its own
    coordinates and bounds. Coarse coordinates carry no latitude/longitude standard_name (the
    grid mapping of the fine grid requires exactly one of each); their units identify them."""
    with quiet_zarr():
        grid = out_mod.Grid(np.asarray(group["lat"][:]), np.asarray(group["lon"][:]),
                            np.asarray(group["row"][:], np.int64), np.asarray(group["col"][:], np.int64))
    data: dict[str, xr.Variable] = {}
    coords: dict[str, xr.Variable] = {}

    def attrs(metric: str, k: str, where: str) -> dict[str, str]:
        u = out_mod.udunits(maps["units"][metric])
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
                ("lat", "lon"), out_mod.to_grid(v, grid),
                {**attrs(metric, k, "per pixel"), "grid_mapping": "crs",
                 "cell_measures": "area: cell_area"})
    if maps["coarse"]:
        g = SM.coarse_grid()
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
                    ("lat_4x5", "lon_4x5"), SM.to_coarse_grid(v, maps["cells"]),
                    attrs(metric, k, "per 4x5-degree cell (plain mean of its pixels' finite values)"))
    return xr.Dataset(data, coords=coords)


# -- training curves --------------------------------------------------------------------------------
def read_metrics_jsonl(text: str) -> tuple[list[dict], list[dict], list[str]]:
    """(training records, held-out records, loss term names) from ``metrics.jsonl`` text.

    Each line is a JSON object with ``step`` and ``loss``; held-out lines have
    ``"split": "dev"`` (``"test"`` in runs made before the three splits). Terms are the loss
    terms (``differland_dist.vocabulary.streams.terms`` names, the loss's order) present, at the top level
    or inside a ``terms`` object."""
    train, test = [], []
    for i, line in enumerate(text.splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("metrics.jsonl line %d is not JSON; skipped", i + 1)
            continue
        if not isinstance(rec, dict) or "step" not in rec:
            continue
        if isinstance(rec.get("terms"), dict):
            rec = {**{k: v for k, v in rec.items() if k != "terms"}, **rec["terms"]}
        (test if rec.get("split") in ("dev", "test") else train).append(rec)
    present = {k for r in train + test for k, v in r.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    terms = [t.name for _, t in streams_table.terms() if t.name in present]
    return train, test, terms


# -- figures ---------------------------------------------------------------------------------------
def _times(group) -> np.ndarray:
    with quiet_zarr():
        t = group["time"]
        num = np.asarray(t[:], np.float64)
        units = t.attrs.get("units", "days since 2001-01-01")
        cal = t.attrs.get("calendar", "standard")
    try:
        return np.asarray(xr.coding.times.decode_cf_datetime(num, units, cal))
    except Exception:  # noqa: BLE001 - undecodable units: plot raw numbers
        return num


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


_TS_PANELS = (("lai", "lai"), ("sif", "sif"), ("gpp", "gpp_flux"), ("reco", "reco_flux"),
              ("et", "et_gleam"), ("nbe", "nbe"), ("pool_water", None))


def make_figures(store: PixelStore, group, cfg: ExperimentConfig, plan: dict, samples: dict,
                 options: EvaluationOptions, run_dir: str | None, so: dict | None,
                 recovery: dict | None, split: np.ndarray | None = None) -> dict[str, bytes]:
    """file name (under figures/) -> PNG bytes (``split``: per-pixel split codes of the run)."""
    figs: dict[str, bytes] = {}
    attrs = dict(group.attrs)
    with quiet_zarr():
        if attrs.get("has_maps") and options.map_params:
            maps = {p: np.asarray(group[out_mod.map_var(p)][:]) for p in options.map_params}
            units = {p: group[out_mod.map_var(p)].attrs.get("units", "") for p in options.map_params}
            figs["parameter_maps.png"] = plots.parameter_maps(
                maps, np.asarray(group["lat"][:]), np.asarray(group["lon"][:]), units)
    for name, entry in plan.items():
        if name in samples and any(samples[name][sp][0].size for sp in SPLITS):
            figs[f"scatter_{name}.png"] = plots.density_scatter(
                samples[name], name, entry["units"], {sp: entry[sp]["flat"] for sp in SPLITS})
    series = set(attrs.get("series", []))
    times = _times(group)
    codes = store.split if split is None else split
    for px in series_pixels(store, options.n_series_pixels, codes):
        s = slice(int(px), int(px) + 1)
        panels = []
        for sname, stream in _TS_PANELS:
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
                obs = _obs_pair(v, prod, 1, store.n_time)[0][0]
            panels.append((sname, units, sim, obs))
        if panels:
            lat, lon = float(store.array("lat")[px]), float(store.array("lon")[px])
            figs[f"series_pixel{int(px)}.png"] = plots.time_series(
                times, panels, f"pixel {int(px)} ({lat:.2f}, {lon:.2f}), "
                f"{splits.NAMES[int(codes[px])]} pixel; warm-up shaded",
                warm_up=int(cfg.loss.warm_up))
    if run_dir:
        path = join(run_dir, "metrics.jsonl")
        fs, p = resolve(path, so)
        if fs.exists(p):
            train, test, terms = read_metrics_jsonl(fs.cat_file(p).decode())
            if train or test:
                figs["training_curves.png"] = plots.training_curves(train, test, terms)
    if recovery is not None:
        rec = recovery
        bars = {f"{sp}{' (unbounded)' if key == 'r2_unbounded' else ''}":
                {n: v[key] for n, v in rec[sp]["parameters"].items()}
                for sp in ("test", "train") for key in ("r2", "r2_unbounded")}
        figs["recovery.png"] = plots.recovery_bars(bars)
    return figs


# -- carbon-cycle products --------------------------------------------------------------------------
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
    total_names = [n for n in C_.TOTAL_SERIES if n in series]
    zonal_names = [n for n in C_.ZONAL_SERIES if n in series]
    N, T, spy = int(attrs["n_pixels"]), int(attrs["n_time"]), int(attrs["steps_per_year"])
    C = int(attrs["chunk_pixels"])
    bp = max(C, (block_pixels // C) * C)
    with quiet_zarr():
        area = np.asarray(group["pixel_area"][:], np.float64)
        row = np.asarray(group["row"][:], np.int64)
        lat = np.asarray(group["lat"][:], np.float64)
        step_days = np.asarray(group["step_days"][:], np.float64) if "step_days" in names else None
        arrays = {n: group[n] for n in dict.fromkeys(total_names + zonal_names)}
    days = C_.step_days(step_days, T, spy)
    totals = C_.GlobalTotals(total_names, T)
    zonal = C_.ZonalMeans(zonal_names, lat.size)
    for a in range(0, N, bp):
        s = slice(a, min(a + bp, N))
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
    years = [int(str(t)[:4]) for t in _times(group)[::spy][: T // spy]]
    after = [i for i in range(T // spy) if i * spy >= warm_up]
    return {
        "units": "PgC yr-1",
        "arithmetic": "total_y = sum over the year's steps t and pixels p of F[p, t] (g m-2 d-1) "
                      "* days[t] (d, step_days) * pixel_area[p] (m2) / 1e15 (g per Pg); "
                      "pixel_area = R^2 * dlon * |sin(lat_n) - sin(lat_s)|, R = "
                      f"{out_mod.EARTH_RADIUS_M} m",
        "land_area_m2": float(area.sum()),
        "years": years,
        "annual": {n: [float(x) for x in v] for n, v in tot.items()},
        "mean_after_warm_up": {n: float(np.mean(v[after])) if after else float("nan")
                               for n, v in tot.items()},
        "zonal_means": zonal.result(),
        "zonal_units": {n: group[n].attrs.get("units", "") for n in zonal_names},
    }


def products_dataset(group, skill: dict[str, dict[str, np.ndarray]], carbon: dict[str, Any],
                     plan: dict[str, dict], title: str):
    """The skill maps (lat, lon), zonal means (lat) and global totals (year) as a CF Dataset."""
    with quiet_zarr():
        grid = out_mod.Grid(np.asarray(group["lat"][:]), np.asarray(group["lon"][:]),
                            np.asarray(group["row"][:], np.int64), np.asarray(group["col"][:], np.int64))
    with quiet_zarr():
        src = with_bounds(xr.open_zarr(group.store, zarr_format=3, consolidated=True))
    coords = {k: xr.Variable(src[k].dims, np.asarray(src[k].values), dict(src[k].attrs))
              for k in ("lat", "lon", "lat_bnds", "lon_bnds", "cell_area", "crs") if k in src.variables}
    what = {"nse": ("1", "Nash-Sutcliffe efficiency"), "kge": ("1", "Kling-Gupta efficiency"),
            "r": ("1", "Pearson correlation"), "n": ("1", "observations compared")}
    data = {}
    for stream, mets in skill.items():
        units = out_mod.udunits(plan[stream]["units"])
        for k, v in mets.items():
            u, long = what.get(k, (units, "mean bias (simulated - observed)"))
            data[f"{stream}_{k}"] = xr.Variable(
                ("lat", "lon"), out_mod.to_grid(v, grid),
                {"units": u, "long_name": f"{long} of {stream} per pixel (after warm-up)",
                 "grid_mapping": "crs", "cell_measures": "area: cell_area"})
    for n, z in carbon["zonal_means"].items():
        data[f"zonal_{n}"] = xr.Variable("lat", z.astype(np.float32), {
            "units": carbon["zonal_units"][n],
            "long_name": f"area-weighted zonal mean of the time-mean {n} (after warm-up)"})
    years = np.asarray(carbon["years"], np.int32)
    for n, v in carbon["annual"].items():
        data[f"global_total_{n}"] = xr.Variable("year", np.asarray(v, np.float64), {
            "units": "Pg yr-1", "long_name": f"global annual total {n}, as carbon (PgC yr-1)",
            "comment": carbon["arithmetic"]})
    coords["year"] = xr.Variable("year", years, {"long_name": "calendar year", "units": "1"})
    history = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} created by differland evaluate"
    return xr.Dataset(data, coords=coords, attrs={"Conventions": "CF-1.8", "title": title,
                                                  "history": history, **provenance.record()})


def write_products(url: str, ds, so: dict | None) -> None:
    """Write the products store at ``url``, replacing only a products store we wrote before."""
    loc = Location(url, so)
    if loc.check_replaceable(PRODUCTS_KIND, overwrite=True):
        loc.clear_owned(PRODUCTS_KIND)
    loc.claim(PRODUCTS_KIND, ["zarr.json", *(str(n) for n in ds.variables)])
    with quiet_zarr():
        ds.to_zarr(zarr_store(url, so, read_only=False), mode="a", zarr_format=3, consolidated=True)


def carbon_figures(group, skill: dict, carbon: dict, plan: dict) -> dict[str, bytes]:
    """``skill_<stream>.png`` (NSE, KGE, r, bias maps), ``zonal_means.png``, ``global_totals.png``."""
    figs: dict[str, bytes] = {}
    with quiet_zarr():
        lat, lon = np.asarray(group["lat"][:]), np.asarray(group["lon"][:])
        grid = out_mod.Grid(lat, lon, np.asarray(group["row"][:], np.int64),
                            np.asarray(group["col"][:], np.int64))
    for stream, mets in skill.items():
        if not np.isfinite(mets["bias"]).any():
            continue
        maps = {f"{stream} {k.upper() if k != 'bias' else k}": out_mod.to_grid(mets[k], grid)
                for k in C_.SKILL_METRICS}
        units = {f"{stream} bias": out_mod.udunits(plan[stream]["units"])}
        figs[f"skill_{stream}.png"] = plots.parameter_maps(maps, lat, lon, units)
    if carbon["zonal_means"]:
        figs["zonal_means.png"] = plots.zonal_means(lat, carbon["zonal_means"], carbon["zonal_units"])
    if carbon["annual"] and carbon["years"]:
        figs["global_totals.png"] = plots.global_totals(carbon["years"], carbon["annual"])
    return figs


# -- writing --------------------------------------------------------------------------------------
def write_bytes(url: str, data: bytes, so: dict | None = None) -> None:
    """Write a file atomically (:meth:`differland_dist.storage.location.Location.write_atomic`)."""
    Location(url, so).write_atomic(data)


def evaluate(target: str, *, store: str | None = None, out: str | None = None,
             storage_options: dict | None = None, out_storage_options: dict | None = None,
             options: EvaluationOptions = EvaluationOptions(), inference=None) -> dict[str, Any]:
    """Evaluate an inference output or a run directory; write JSON, Markdown and figures.

    Args:
      target: inference output store URL or run directory (see the module docstring).
      store: input store URL (default: the one the output was made from).
      out: output directory (default: see the module docstring).
      storage_options: fsspec options of the input store and run directory;
        ``out_storage_options`` of the output store and the results (default: the same).
      inference: ``InferenceOptions`` for a run directory without complete inference output.

    Returns the result (as written to ``evaluation.json``).
    """
    t0 = time.perf_counter()
    oso = storage_options if out_storage_options is None else out_storage_options
    output, run_dir, is_run = resolve_target(target, store, storage_options, oso, inference)
    group = out_mod.open_output(output, oso)
    attrs = dict(group.attrs)
    if not attrs.get("complete"):
        raise DifferlandError(f"{output}: the inference output is not complete; run "
                              "`differland infer` again to finish it")
    cfg = from_dict(json.loads(attrs["config_json"]))
    store_url = store or attrs["source_store"]
    pstore = PixelStore(store_url, storage_options)
    if (pstore.n_pixels, pstore.n_time) != (int(attrs["n_pixels"]), int(attrs["n_time"])):
        raise DifferlandError(f"{store_url} has {pstore.n_pixels} pixels x {pstore.n_time} steps, "
                              f"the output {attrs['n_pixels']} x {attrs['n_time']}: not its input store")
    out_dir = out or default_out_dir(target, is_run)
    if attrs.get("has_maps"):  # refuse a foreign evaluation.zarr before the long work
        Location(join(out_dir, PRODUCTS_NAME), oso).check_replaceable(PRODUCTS_KIND, overwrite=True)
    if options.conventions == "paper" and options.paper_warm_up >= pstore.n_time:
        raise DifferlandError(f"paper conventions: the {options.paper_warm_up}-step warm-up leaves "
                              f"nothing of the store's {pstore.n_time} steps")
    skill: dict[str, dict[str, np.ndarray]] = {}
    # the split the run trained with: the store's, a published run's (data.run) or its own
    # draw (data.split_seed)
    codes = splits.pixel_codes(pstore.patch, splits.of_data(pstore, cfg.data))
    plan, samples = compare(pstore, group, cfg, options, skill=skill, split=codes)
    rec = recovery_from_store(pstore, group, codes)
    carbon = carbon_products(group, int(cfg.loss.warm_up), options.block_pixels)
    paper_maps: dict[str, Any] = {}
    paper = (paper_conventions(pstore, group, cfg, codes, warm_up=options.paper_warm_up,
                               block_pixels=options.block_pixels, maps=paper_maps)
             if options.conventions == "paper" else None)
    result: dict[str, Any] = {
        "output": output,
        "inputs": {"store": store_url, "checkpoint": attrs.get("checkpoint_file"),
                   "checkpoint_step": attrs.get("checkpoint_step"), "warm_up": int(cfg.loss.warm_up),
                   "steps_evaluated": pstore.n_time - int(cfg.loss.warm_up), "run_dir": run_dir,
                   "n_pixels": pstore.n_pixels,
                   "n_dev_pixels": int((codes == splits.DEV).sum()),
                   "n_test_pixels": int((codes == splits.TEST).sum()),
                   "split_seed": cfg.data.split_seed},
        "streams": plan,
        "recovery": rec,
        "paper_conventions": paper,
        "global_totals": None if carbon is None else
        {k: v for k, v in carbon.items() if k not in ("zonal_means", "zonal_units")},
        "products": None,
        "figures": [],
    }
    if carbon is not None:
        ds = products_dataset(group, skill, carbon, plan, f"evaluation of {output}")
        if paper_maps:  # the paper's skill maps beside ours (--conventions paper)
            ds = ds.merge(paper_map_dataset(group, paper_maps), combine_attrs="override")
        write_products(join(out_dir, PRODUCTS_NAME), ds, oso)
        result["products"] = {"store": PRODUCTS_NAME, "variables": sorted(map(str, ds.data_vars))}
    if options.figures:
        figs = make_figures(pstore, group, cfg, plan, samples, options, run_dir, storage_options, rec,
                            split=codes)
        if carbon is not None:
            figs.update(carbon_figures(group, skill, carbon, plan))
        for name, data in figs.items():
            write_bytes(join(out_dir, "figures", name), data, oso)
        result["figures"] = [f"figures/{n}" for n in figs]
    write_bytes(join(out_dir, "evaluation.json"), report.to_json(result).encode(), oso)
    write_bytes(join(out_dir, "evaluation.md"), report.to_markdown(result).encode(), oso)
    result["out_dir"] = out_dir
    log.info("evaluation of %s written to %s in %.1f s", output, out_dir, time.perf_counter() - t0)
    return result
