"""Generalisation: test-split skill of every predictor set, and its difference to PFT-only
with a paired test across members (paired by member seed; Welch's test where the sets kept
different seeds), in two views of the evaluation: ``flat`` (every pixel-month, the
evaluation's skill) and ``spatial`` (the pixels' time means: how well unseen places are told
apart, without the seasonal cycle that every set fits)."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy import stats


VIEWS = ("flat", "spatial")


def _member_metric(ev: Mapping, stream: str, split: str = "test", metric: str = "nse",
                   view: str = "flat") -> float:
    try:
        v = ev["streams"][stream][split][view][metric]
    except (KeyError, TypeError):
        return float("nan")
    return float(v) if v is not None else float("nan")


def _seed(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _clean(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def compare(scores: Mapping, member_scores: Mapping[str, Mapping[str, Mapping]], pft_set: str | None,
            split: str = "test", metric: str = "nse", view: str = "flat") -> dict:
    """Per stream and set, in ``view`` (:data:`VIEWS`): ensemble skill, member mean and sd
    (``scores.json``), and against ``pft_set``: ``diff`` (member-mean difference), ``p_value``
    (paired t-test by seed, else Welch), ``beyond_spread`` (diff larger than both sets'
    member sd), ``better``."""
    out: dict = {"split": split, "metric": metric, "view": view, "reference": pft_set, "streams": {}}
    streams = sorted({st for per in scores.values() for st in per})
    for st in streams:
        rows = {}
        for s, per in scores.items():
            if st not in per:
                continue
            c = per[st][split].get(view, {}).get(metric)
            if not c:
                continue
            vals = {_seed(k): _member_metric(ev, st, split, metric, view)
                    for k, ev in member_scores.get(s, {}).items()}
            rows[s] = {"ensemble": c.get("ensemble"), "member_mean": c.get("member_mean"),
                       "member_sd": c.get("member_sd"),
                       "members": {k: _clean(v) for k, v in vals.items()}}
        if pft_set in rows:
            ref = rows[pft_set]
            for s, r in rows.items():
                if s == pft_set:
                    continue
                r.update(_test(r, ref))
        out["streams"][st] = rows
    return out


def _test(r: Mapping, ref: Mapping) -> dict:
    a = {k: v for k, v in r["members"].items() if v is not None}
    b = {k: v for k, v in ref["members"].items() if v is not None}
    common = sorted(set(a) & set(b))
    res: dict = {"diff": None, "p_value": None, "test": None, "beyond_spread": False,
                 "better": False}
    if r["member_mean"] is None or ref["member_mean"] is None:
        return res
    diff = float(r["member_mean"] - ref["member_mean"])
    res["diff"] = diff
    p = float("nan")
    if len(common) >= 2:
        d = np.array([a[k] - b[k] for k in common])
        if np.std(d) > 0:
            p = float(stats.ttest_rel([a[k] for k in common], [b[k] for k in common]).pvalue)
        res["test"] = f"paired t-test over {len(common)} members (same seeds)"
    elif len(a) >= 2 and len(b) >= 2:
        p = float(stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False).pvalue)
        res["test"] = f"Welch t-test ({len(a)} vs {len(b)} members)"
    else:
        res["test"] = "too few members for a test"
    res["p_value"] = _clean(p)
    spread = max(r["member_sd"] or 0.0, ref["member_sd"] or 0.0)
    res["spread"] = spread
    res["beyond_spread"] = bool(abs(diff) > spread)
    res["better"] = bool(diff > 0 and abs(diff) > spread)
    return res
