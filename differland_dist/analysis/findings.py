"""Which results of an analysis are findings: the rules that turn numbers and their bootstrap
intervals (:mod:`differland_dist.analysis.bootstrap`) into statements, and the statements
``report.md`` may make.

- **PFT share.** A parameter's share is a finding only for a *trusted* parameter (identifiable
  against a synthetic truth; pinned down by the ensemble on real data) whose map the
  predictors explain (``r2_all >= R2_ALL_MIN``); it reads "mostly PFT" when its whole interval
  is above ½, "mostly environment" when below, and **undecided** when the interval spans ½.
  The headline median is taken over those parameters only, with its own interval.
- **Gradients.** A principal component is an *environmental gradient* only when all
  predictors explain its scores out of fold (cross-validated R² of the scores, interval lower
  end >= R2_ALL_MIN); otherwise its predictor correlations are not reported as a finding.
- **SHAP.** A parameter's leading predictor is a finding only for a trusted, explainable
  parameter and only when it ranks first in at least SHAP_FIRST_MIN of the resamples.
- **Generalisation.** "Beyond the member spread" only when the difference exceeds the larger
  member sd *and* the test's p < SIGNIFICANCE; otherwise "not distinguishable".
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from differland_dist.analysis.bootstrap import interval
from differland_dist.analysis.partition import R2_ALL_MIN
from differland_dist.analysis.truth import SIGNIFICANCE
SHAP_FIRST_MIN = 0.95


def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _median(v: Sequence[float]) -> float:
    v = sorted(v)
    if not v:
        return float("nan")
    k = len(v) // 2
    return v[k] if len(v) % 2 else (v[k - 1] + v[k]) / 2


def share_decision(iv: Sequence[float | None] | None) -> str:
    """"PFT" (interval above ½), "environment" (below) or "undecided" (spans ½ or unknown)."""
    if not iv or not _finite(iv[0]) or not _finite(iv[1]):
        return "undecided"
    if iv[0] > 0.5:
        return "PFT"
    if iv[1] < 0.5:
        return "environment"
    return "undecided"


def generalisation_significant(r: Mapping) -> bool:
    """Beyond the member spread and p < SIGNIFICANCE (a missing p is not significant)."""
    p = r.get("p_value")
    return bool(r.get("beyond_spread")) and _finite(p) and p < SIGNIFICANCE


def generalisation_words(r: Mapping) -> str:
    p = r.get("p_value")
    ps = f"p = {p:.3f}" if _finite(p) else "no p-value"
    if generalisation_significant(r):
        return f"beyond the member spread ({ps}, {r.get('test')})"
    return f"not distinguishable from the member spread ({ps}, {r.get('test')})"


def decide(vp: Mapping, trusted: Sequence[str], boot: Mapping | None, shap_top: Mapping | None = None,
           shap_features: Sequence[str] | None = None) -> dict:
    """The findings of an analysis.

    Args:
      vp: the variance partition (``variance_partition`` result, JSON form).
      trusted: parameters the analyses can be trusted for.
      boot: :func:`bootstrap.bootstrap` result (None: no intervals, every share undecided).
      shap_top, shap_features: SHAP ``top`` per parameter and the feature names.
    Returns ``{"shares": {param: {...}}, "headline": {...}, "gradients": [...], "shap": {...},
    "significant": [sentences]}``.
    """
    per = vp["parameters"]
    bshare = (boot or {}).get("pft_share", {})
    eligible = [n for n in trusted if n in per and _finite(per[n].get("r2_all"))
                and per[n]["r2_all"] >= R2_ALL_MIN]
    shares = {}
    for n in per:
        iv = bshare.get(n, {}).get("interval")
        reason = ("not trusted" if n not in trusted else "not explainable by the predictors"
                  if n not in eligible else None)
        shares[n] = {"pft_share": per[n].get("pft_share"), "interval": iv,
                     "decision": share_decision(iv) if reason is None else None, "excluded": reason}
    med = (boot or {}).get("median_pft_share", {})
    pts = [per[n]["pft_share"] for n in eligible if _finite(per[n].get("pft_share"))]
    point = _median(pts) if pts else None
    iv = med.get("interval") if med.get("over") == eligible else None
    if iv is None and eligible and all(n in bshare for n in eligible):
        # the median of each resample over exactly these parameters
        per_b = list(zip(*[bshare[n]["values"] for n in eligible]))
        iv = interval([_median([v for v in row if _finite(v)]) for row in per_b])
    headline = {"over": eligible, "median_pft_share": point, "interval": iv}
    headline["decision"] = share_decision(headline["interval"]) if eligible else "no trusted parameter"
    sig = []
    for n, v in shares.items():
        if v["decision"] in ("PFT", "environment"):
            lo, hi = v["interval"]
            sig.append(f"{n}: PFT share {v['pft_share']:.2f} [{lo:.2f}, {hi:.2f}], mostly {v['decision']}")
    if headline["decision"] in ("PFT", "environment"):
        lo, hi = headline["interval"]
        sig.append(f"median PFT share {point:.2f} [{lo:.2f}, {hi:.2f}] over {len(eligible)} trusted "
                   f"parameters: mostly {headline['decision']}")
    grads = []
    pca = (boot or {}).get("pca") or {}
    for c, iv in enumerate(pca.get("score_r2_all") or []):
        env = bool(iv and _finite(iv[0]) and iv[0] >= R2_ALL_MIN)
        grads.append({"component": f"PC{c + 1}", "score_r2_all": iv, "environmental": env})
        if env:
            sig.append(f"PC{c + 1} (trusted parameters) is an environmental gradient: its scores are "
                       f"predicted out of fold with R² [{iv[0]:.2f}, {iv[1]:.2f}]")
    shap = {}
    freq = ((boot or {}).get("shap") or {}).get("first_rank_frequency", {})
    for n, counts in freq.items():
        if n not in eligible or not shap_features:
            continue
        tot = sum(counts)
        i = max(range(len(counts)), key=lambda k: counts[k])
        decided = tot > 0 and counts[i] / tot >= SHAP_FIRST_MIN
        shap[n] = {"first": shap_features[i], "first_frequency": counts[i] / tot if tot else None,
                   "decided": decided}
        if decided:
            sig.append(f"{n}: {shap_features[i]} is its leading predictor (first in "
                       f"{counts[i]}/{tot} resamples)")
    return {"shares": shares, "headline": headline, "gradients": grads, "shap": shap,
            "significant": sig, "rules": __doc__.split("\n\n", 1)[1].strip()}
