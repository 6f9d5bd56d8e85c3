"""Writing an evaluation: ``evaluation.json`` (NaN as null) and ``evaluation.md`` tables."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from differland_dist.evaluation.metrics import METRICS

VIEWS = ("flat", "spatial", "temporal")
_HEAD = {"n": "n", "nse": "NSE", "kge": "KGE", "r2": "R²", "rmse": "RMSE", "mae": "MAE", "bias": "bias", "r": "r"}


def clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats -> None, numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def to_json(result: Mapping[str, Any]) -> str:
    return json.dumps(clean(result), indent=1, allow_nan=False) + "\n"


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, int):
        return str(v)
    av = abs(v)
    return f"{v:.3g}" if av >= 1e-3 or av == 0 else f"{v:.2e}"


def _stream_table(streams: Mapping[str, Any], split: str, view: str) -> list[str]:
    lines = ["| stream | level | units | " + " | ".join(_HEAD[m] for m in METRICS) + " |",
             "|---|---|---|" + "---:|" * len(METRICS)]
    for name, s in streams.items():
        sc = s.get(split, {}).get(view, {})
        cells = [_fmt(sc.get(m)) for m in METRICS]
        if view == "temporal" and sc.get("n_units"):
            cells[0] += f" ({sc['n_units']} series)"
        lines.append(f"| {name} | {s['level']} | {s['units']} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(result: Mapping[str, Any]) -> str:
    """The evaluation as Markdown: inputs, one table per split and view, recovery, figures."""
    out = [f"# Evaluation of {result['output']}", ""]
    info = result.get("inputs", {})
    for k in ("store", "checkpoint", "checkpoint_step", "warm_up", "steps_evaluated", "run_dir"):
        if k in info and info[k] is not None:
            out.append(f"- {k.replace('_', ' ')}: `{info[k]}`")
    out += ["", "Metrics: NSE = 1 − SSE/SST; KGE = 1 − √((r−1)² + (α−1)² + (β−1)²), α = "
            "sd(sim)/sd(obs), β = mean(sim)/mean(obs); R² = r²; bias = mean(sim − obs). Views: *flat* = all "
            "observed unit-steps; *spatial* = per-unit time means across units; *temporal* = "
            "per-unit series, median over units. Units are pixels, or patches (patch means) for "
            "patch-level streams. Warm-up steps excluded.", ""]
    streams = result["streams"]
    off = {k: v["note"] for k, v in streams.items() if v.get("note")}
    for split, title in (("train", "training patches"), ("dev", "dev patches (model selection)"),
                         ("test", "test patches (never trained on or selected by)")):
        for view in VIEWS:
            out += [f"## {title}: {view}", ""] + _stream_table(streams, split, view) + [""]
    if off:
        out += ["Streams without comparison: " + "; ".join(f"{k}: {v}" for k, v in off.items()), ""]
    out += _paper_section(result.get("paper_conventions"))
    gt = result.get("global_totals")
    if gt:
        yrs = gt["years"]
        out += ["## Global annual totals (PgC yr⁻¹)", "",
                f"Arithmetic: {gt['arithmetic']}. Land area: {gt['land_area_m2']:.4g} m².", "",
                "| series | " + " | ".join(str(y) for y in yrs) + " | mean after warm-up |",
                "|---|" + "---:|" * (len(yrs) + 1)]
        for name, vals in gt["annual"].items():
            out.append(f"| {name} | " + " | ".join(_fmt(v) for v in vals)
                       + f" | {_fmt(gt['mean_after_warm_up'][name])} |")
        out.append("")
    prod = result.get("products")
    if prod:
        out += [f"Skill maps (NSE, KGE, r, bias per pixel-level stream), zonal means and the "
                f"totals are in `{prod['store']}` (zarr, CF).", ""]
    rec = result.get("recovery")
    if rec:
        out += ["## Parameter recovery (synthetic store)", "",
                "R² = 1 − SSE/SST of estimated vs true (the 1:1 line), on physical values and on "
                "the network's unbounded scale; held-out pixels unless noted.", "",
                f"Median R² over parameters, held-out pixels: {_fmt(rec['test']['median_r2'])} "
                f"(unbounded: {_fmt(rec['test']['median_r2_unbounded'])}); training pixels: "
                f"{_fmt(rec['train']['median_r2'])}.", "",
                "| parameter | R² (test) | R² unbounded (test) | r (test) | R² (train) | n test |",
                "|---|---:|---:|---:|---:|---:|"]
        for name, v in rec["test"]["parameters"].items():
            tr = rec["train"]["parameters"].get(name, {})
            out.append(f"| {name} | {_fmt(v['r2'])} | {_fmt(v['r2_unbounded'])} | {_fmt(v['r'])} | "
                       f"{_fmt(tr.get('r2'))} | {v['n']} |")
        out.append("")
    figs = result.get("figures", [])
    if figs:
        out += ["## Figures", ""] + [f"![{f}]({f})" for f in figs] + [""]
    return "\n".join(out)


def _paper_section(paper: Mapping[str, Any] | None) -> list[str]:
    """The scores under the paper's conventions (``--conventions paper``), one table per split."""
    if not paper:
        return []
    out = ["## The paper's conventions", "",
           f"As {paper['source']} scores: {paper['warm_up']}-month warm-up; units are pixels, or "
           f"patches for nbe, fire and water (water: per-pixel anomalies averaged over the patch "
           f"padded to {paper['padded_patch_size']} rows, steps whose mean weight is below "
           f"{paper['water_threshold']} masked); slope and intercept of observed on simulated; "
           "temporal NSE per unit, mean / median / std over units.", ""]
    for split in ("train", "dev", "test"):
        out += [f"### {split}", "",
                "| stream | n | NSE | RMSE | r | slope | intercept | spatial NSE | spatial slope | "
                "temporal NSE mean | median | std |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, e in paper["streams"].items():
            if "note" in e:
                out.append(f"| {name} | {e['note']} |" + " |" * 10)
                continue
            sc = e[split]
            f, sp, tn = sc["flat"], sc["spatial"], sc["temporal_nse"]
            out.append(f"| {name} | {sc['n']} | {_fmt(f['nse'])} | {_fmt(f['rmse'])} | {_fmt(f['r'])} | "
                       f"{_fmt(f['slope'])} | {_fmt(f['intercept'])} | {_fmt(sp['nse'])} | "
                       f"{_fmt(sp['slope'])} | {_fmt(tn['mean'])} | {_fmt(tn['median'])} | "
                       f"{_fmt(tn['std'])} |")
        out.append("")
    maps = paper.get("skill_maps") or {}
    rows = [(f"{stream} {k}", e) for view in ("pixel", "coarse_4x5")
            for stream, per in (maps.get(view) or {}).items()
            for k, e in per.items() if isinstance(e, Mapping)]
    if rows:
        out += ["### Per-pixel skill maps", "",
                "The maps `evaluate_performance.py` makes are in `evaluation.zarr` "
                "(`paper_<stream>_<map>`; nbe on the 4° × 5° grid); their medians:", "",
                "| stream map | median | train | dev | test |", "|---|---:|---:|---:|---:|"]
        for k, e in rows:
            out.append(f"| {k} | {_fmt(e.get('median'))} | {_fmt(e.get('median_train'))} | "
                       f"{_fmt(e.get('median_dev'))} | {_fmt(e.get('median_test'))} |")
        out.append("")
    return out
