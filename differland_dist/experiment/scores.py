"""The experiment's scores: every predictor set × observation stream × split × view × metric,
for the ensemble mean and as member mean ± standard deviation (the paper's generalisation
comparison).

``scores.json`` (scripts read it)::

    {"<set>": {"<stream>": {"train"|"dev"|"test": {
        "flat"|"spatial": {"nse"|"kge"|"r2"|"rmse"|"mae"|"bias"|"r":
                           {"ensemble": x, "member_mean": y, "member_sd": z, "members": [...]}},
        "probabilistic": {"crps", "crps_spread", "spread_skill", "coverage_50", "coverage_90",
                          "mae", "rmse", "n", "members"}  (or {"note": why})}}}}

The probabilistic scores treat the kept members as the ensemble's distribution (CRPS in its
fair form, the spread–skill ratio, interval coverage): see
:mod:`differland_dist.experiment.probabilistic` for their definitions.

NaN (no data for that split, or a constant series) is written as null. Each member is scored
on its own train/dev partition (a member may draw its own); the ensemble mean on the store's
split as written. Test patches are the same for every member.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

SPLITS = ("train", "dev", "test")
VIEWS = ("flat", "spatial")
METRICS = ("nse", "kge", "r2", "rmse", "mae", "bias", "r")


def _get(ev: Mapping, stream: str, split: str, view: str, metric: str) -> float:
    try:
        v = ev["streams"][stream][split][view][metric]
    except (KeyError, TypeError):
        return float("nan")
    return float(v) if v is not None else float("nan")


def _clean(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def collect(member_evals: Mapping[str, Sequence[Mapping]], ensemble_evals: Mapping[str, Mapping],
            probabilistic: Mapping[str, Mapping] | None = None) -> dict[str, Any]:
    """scores (see the module doc) from each set's member evaluations and the evaluation of
    its ensemble mean (``evaluation.json`` results of :func:`differland_dist.evaluation.evaluate`),
    and each set's probabilistic scores (stream -> split -> scores, or stream -> ``{"note"}``,
    of :func:`differland_dist.experiment.probabilistic.score_members`)."""
    out: dict[str, Any] = {}
    for set_name, evals in member_evals.items():
        ens = ensemble_evals.get(set_name, {})
        streams = sorted({s for ev in [*evals, ens] for s, e in (ev.get("streams") or {}).items()
                          if isinstance(e, Mapping) and "note" not in e})
        per_set: dict[str, Any] = {}
        for st in streams:
            per_set[st] = {}
            for sp in SPLITS:
                per_set[st][sp] = {}
                for view in VIEWS:
                    cell = {}
                    for m in METRICS:
                        vals = np.array([_get(ev, st, sp, view, m) for ev in evals], np.float64)
                        ok = vals[np.isfinite(vals)]
                        cell[m] = {"ensemble": _clean(_get(ens, st, sp, view, m)),
                                   "member_mean": _clean(float(ok.mean())) if ok.size else None,
                                   "member_sd": _clean(float(ok.std(ddof=1))) if ok.size > 1 else
                                   (0.0 if ok.size == 1 else None),
                                   "members": [_clean(v) for v in vals]}
                    per_set[st][sp][view] = cell
                prob = ((probabilistic or {}).get(set_name) or {}).get(st)
                if prob is not None:
                    per_set[st][sp]["probabilistic"] = _clean_all(prob.get(sp, prob))
        out[set_name] = per_set
    return out


def _clean_all(d: Mapping) -> dict:
    return {k: _clean(v) if isinstance(v, float) else v for k, v in d.items()}


def to_json(scores: Mapping) -> str:
    return json.dumps(scores, indent=1, allow_nan=False)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def to_markdown(scores: Mapping, title: str = "Experiment scores") -> str:
    """Per stream, one table of test/dev/train NSE and RMSE (flat and spatial) by set."""
    lines = [f"# {title}", "",
             "Ensemble mean, then member mean ± standard deviation. *test*: patches no member "
             "trained on or was selected by; *dev*: the patches that chose the kept members; "
             "*train*: the patches fitted.", ""]
    streams = sorted({st for per in scores.values() for st in per})
    for st in streams:
        lines += [f"## {st}", "",
                  "| predictor set | split | NSE flat | NSE spatial | RMSE flat | r flat |",
                  "|---|---|---|---|---|---|"]
        for set_name, per in scores.items():
            if st not in per:
                continue
            for sp in ("test", "dev", "train"):
                cells = []
                for view, m in (("flat", "nse"), ("spatial", "nse"), ("flat", "rmse"), ("flat", "r")):
                    c = per[st][sp][view][m]
                    cells.append(f"{_fmt(c['ensemble'])} ({_fmt(c['member_mean'])} ± "
                                 f"{_fmt(c['member_sd'])})")
                lines.append(f"| {set_name} | {sp} | " + " | ".join(cells) + " |")
        lines.append("")
        prob = {s: per[st]["test"].get("probabilistic") for s, per in scores.items() if st in per}
        prob = {s: p for s, p in prob.items() if p and "crps" in p}
        if prob:
            lines += ["Test split, the members as an ensemble (CRPS fair form, lower is better; "
                      "spread–skill 1 = spread as large as the error; coverage of the central "
                      "50 % and 90 % intervals):", "",
                      "| predictor set | members | CRPS | MAE (mean) | spread–skill | cover 50 % | cover 90 % |",
                      "|---|---|---|---|---|---|---|"]
            for s, p in prob.items():
                lines.append(f"| {s} | {p['members']} | {_fmt(p['crps'])} | {_fmt(p['mae'])} | "
                             f"{_fmt(p['spread_skill'], 2)} | {_fmt(p['coverage_50'], 2)} | "
                             f"{_fmt(p['coverage_90'], 2)} |")
            lines.append("")
    return "\n".join(lines)


def nse_figure(scores: Mapping, stream: str, split: str = "test") -> bytes:
    """PNG: NSE on ``split`` by predictor set, ensemble mean (bar), members (dots) and their
    mean ± standard deviation (error bar)."""
    # imported here: matplotlib is heavy and only the figures need it; the backend is set before
    # pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [s for s in scores if stream in scores[s]]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(sets) + 1.5), 3.6), dpi=110)
    for i, s in enumerate(sets):
        c = scores[s][stream][split]["flat"]["nse"]
        if c["ensemble"] is not None:
            ax.bar(i, c["ensemble"], color="#9ecae1", width=0.6, label="ensemble mean" if i == 0 else None)
        vals = [v for v in c["members"] if v is not None]
        ax.scatter(np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)), vals, s=10,
                   color="#08519c", zorder=3, label="members" if i == 0 else None)
        if c["member_mean"] is not None:
            ax.errorbar(i + 0.25, c["member_mean"], yerr=c["member_sd"] or 0.0, fmt="o", color="k",
                        ms=3, capsize=3, label="member mean ± sd" if i == 0 else None)
    ax.set_xticks(range(len(sets)), sets, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"NSE ({split}, flat)")
    ax.set_title(f"{stream}: {split} skill by predictor set", fontsize=10)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
