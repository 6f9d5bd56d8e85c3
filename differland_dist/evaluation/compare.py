"""The comparison of model output with every observation stream, per split: which streams are
compared (:func:`stream_plan`), and their metrics and sampled pairs read block by block
(:func:`compare`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from differland_dist.config import ExperimentConfig
from differland_dist.data import schema
from differland_dist.data.store import PixelStore
from differland_dist.errors import DifferlandError
from differland_dist.evaluation import carbon, metrics, report
from differland_dist.evaluation.blocks import Blocks, block_slices, obs_pair, obs_vars
from differland_dist.evaluation.options import EvaluationOptions
from differland_dist.evaluation.streams import (
    SPLITS, PatchAccumulator, UnitAccumulator, comparable, model_side, pairs, rules)
from differland_dist.vocabulary import streams

log = logging.getLogger(__name__)


def stream_plan(cfg: ExperimentConfig, store: PixelStore, series: Sequence[str]) -> dict[str, dict]:
    """Per stream: product, units, level, kind and either ``note`` (why it is not compared)
    or nothing (compared)."""
    have = set(store.array_names)
    plan = {}
    rule_of = rules()
    for st in streams.label_order():
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


def _accumulators(store: PixelStore, plan: dict, active: list[str], codes: np.ndarray, Tw: int,
                  options: EvaluationOptions) -> dict[str, Any]:
    """One accumulator per compared stream: per patch (patch-level streams, over ``Tw``
    steps after the warm-up) or per unit."""
    rule_of = rules()
    spy = int(store.steps_per_year)
    n_x = {"monthly": Tw, "anomaly": Tw, "annual": Tw // spy, "static": 1}
    kw = {"sample_cap": options.scatter_points, "min_obs_temporal": options.min_obs_temporal}
    patch_ids = store.patch_ids
    patch_split = np.array([codes[store.patch_slices[int(p)].start] for p in patch_ids])
    accs: dict[str, Any] = {}
    for s in active:
        rule = rule_of[s]
        accs[s] = (PatchAccumulator(patch_ids, patch_split, n_x[rule.kind], **kw)
                   if rule.level == "patch" else UnitAccumulator(**kw))
    return accs


@dataclass(frozen=True)
class _Pass:
    """What one comparison pass over the blocks carries: the store, the plan and its compared
    streams, their accumulators, the split codes, the warm-up (steps), the per-pixel skill
    maps to fill (or None) and the observations a unit needs for the temporal view."""

    store: PixelStore
    plan: dict
    active: list
    accs: dict
    codes: np.ndarray
    warm_up: int
    skill: dict | None
    min_obs: int


def _add_block(run: _Pass, reader: Blocks, s: slice) -> None:
    """Read one block of pixels and add every compared stream's pairs to its accumulator
    (and per-pixel skill of pixel-level streams to ``run.skill``)."""
    rule_of = rules()
    store, wu = run.store, run.warm_up
    T, spy = store.n_time, int(store.steps_per_year)
    P = s.stop - s.start
    v = reader.obs(obs_vars(run.plan, run.active), s)
    need_series = sorted({n for a in run.active for n in rule_of[a].series})
    sim_series = {k: x[:, wu:] for k, x in reader.series(need_series, s).items()}
    split_s, patch = run.codes[s], store.patch[s]
    for name in run.active:
        rule = rule_of[name]
        val, w = obs_pair(v, run.plan[name]["product"], P, T)
        o, sm, m = comparable(rule, val[:, wu:], w[:, wu:], model_side(rule, sim_series), spy)
        if rule.level == "patch":
            run.accs[name].add(o, sm, m, patch)
        else:
            run.accs[name].add(o, sm, m, split_s)
            if run.skill is not None:
                for k, x in carbon.pixel_skill(o, sm, m, run.min_obs).items():
                    run.skill[name][k][s] = x


def _results(plan: dict, accs: dict) -> dict[str, dict]:
    """Put each stream's metrics into its plan entry (empty scores for streams not compared);
    the sampled pairs per compared stream."""
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
            empty = {**metrics.empty_scores(), "n_units": 0}
            entry.update({sp: {v: dict(empty) for v in report.VIEWS} for sp in SPLITS})
    return samples


def compare(store: PixelStore, group, cfg: ExperimentConfig, options: EvaluationOptions,
            skill: dict[str, dict[str, np.ndarray]] | None = None, split: np.ndarray | None = None
            ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Metrics per stream (see :func:`stream_plan`) and sampled pairs for the scatter plots.

    With ``skill`` (a dict), it also receives per pixel-level stream compared the per-pixel
    skill (``carbon.pixel_skill``): stream -> metric -> (N,) float32."""
    attrs = dict(group.attrs)
    plan = stream_plan(cfg, store, list(attrs.get("series", [])))
    active = [s for s, e in plan.items() if "note" not in e]
    N, T = store.n_pixels, store.n_time
    wu = int(cfg.loss.warm_up)
    if wu >= T:
        raise DifferlandError(f"warm-up ({wu} steps) leaves nothing of the {T} steps to evaluate")
    codes = store.split if split is None else split
    run = _Pass(store, plan, active, _accumulators(store, plan, active, codes, T - wu, options),
                codes, wu, skill, options.min_obs_temporal)
    if skill is not None:
        rule_of = rules()
        for name in active:
            if rule_of[name].level == "pixel":
                skill[name] = {k: np.full(N, np.nan, np.float32) for k in ("n", *carbon.SKILL_METRICS)}
    reader = Blocks(store, group)
    t0 = time.perf_counter()
    try:
        for s in block_slices(N, int(attrs["chunk_pixels"]), options.block_pixels):
            _add_block(run, reader, s)
            log.info("evaluated pixels %d / %d (%.1f s)", s.stop, N, time.perf_counter() - t0)
    finally:
        reader.close()
    return plan, _results(plan, run.accs)
