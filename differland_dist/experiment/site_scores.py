"""Per-site skill of a trained run on a site store: monthly Nash-Sutcliffe efficiency of GPP,
ET, NEE and LAI per site, over observed steps after the warm-up, on the test years of a time
split or on every year of held-out sites; and the median over sites."""

from __future__ import annotations

import math
import statistics
from typing import Mapping, Sequence

import numpy as np

from differland_dist.data import splits
from differland_dist.errors import DifferlandError

#: Scored variable -> (model output, observed stream); NEE is the site's NBE stream.
SCORED: dict[str, tuple[str, str]] = {
    "GPP": ("gpp", "gpp_flux"), "ET": ("ET", "et_flux"), "NEE": ("nee", "nbe"),
    "LAI": ("lai", "lai")}
#: Where a run is scored: the test years of every site (time split), its training years (how
#: well the run fits what it saw), or every year of the held-out sites (leave sites out).
PERIODS = ("test_time", "train_time", "held_out_sites")


def nse(sim: np.ndarray, obs: np.ndarray, weight: np.ndarray) -> float:
    """1 - SSE/SST over the steps where ``weight`` > 0 (NaN with fewer than 3, or SST = 0)."""
    m = np.asarray(weight) > 0
    if m.sum() < 3:
        return math.nan
    o, s = np.asarray(obs, np.float64)[m], np.asarray(sim, np.float64)[m]
    sst = float(((o - o.mean()) ** 2).sum())
    return float(1.0 - ((s - o) ** 2).sum() / sst) if sst > 0 else math.nan


def site_scores(run_dir: str, store_url: str, period: str,
                warm_up: int | None = None) -> dict[str, dict[str, float]]:
    """{site id: {"GPP"|"ET"|"NEE"|"LAI": NSE}} of the run ``run_dir`` on ``store_url``.

    Args:
      period: "test_time" (steps marked ``time_test``, every site), "train_time" (the other
        steps) or "held_out_sites" (every step of the sites whose split is test).
      warm_up: first steps left out (default: the run's ``loss.warm_up``).
    """
    if period not in PERIODS:
        raise DifferlandError(f"period {period!r}: expected one of {', '.join(PERIODS)}")
    # imported here: keeps the CLI's help free of JAX
    from differland_dist.data.batch import TIME_TEST
    from differland_dist.data.store import open_store
    from differland_dist.inference.compute import read_patches, simulate_batch
    from differland_dist.vocabulary.dalec_io import OUTPUTS
    from differland_dist.runs.trained import load_trained

    tm = load_trained(run_dir)
    store = open_store(store_url)
    names = set(store.array_names)
    if "site_id" not in names:
        raise DifferlandError(f"{store_url}: not a site store (no site_id; import one with "
                              "differland import-sites or import-fluxnet)")
    if period != "held_out_sites" and TIME_TEST not in names:
        raise DifferlandError(f"{store_url}: has no time split ({TIME_TEST}): it was imported "
                              "with held-out sites")
    batch = read_patches(tm, store, store.patch_ids)
    _, out = simulate_batch(tm, batch)
    px = batch.pixel_index
    ids = [str(x) for x in np.asarray(store.array("site_id")[...])[px]]
    keep = np.ones((len(ids), store.n_time), bool)
    keep[:, : tm.config.loss.warm_up if warm_up is None else warm_up] = False
    if period != "held_out_sites":
        keep &= np.asarray(store.array(TIME_TEST)[...])[px] == (1 if period == "test_time" else 0)
        chosen = range(len(ids))
    else:
        split = np.asarray(store.array("split")[...])[px]
        chosen = [i for i in range(len(ids)) if split[i] == splits.TEST]
    return {ids[i]: {k: nse(out[i, :, OUTPUTS.index(name)], batch.labels.value[stream][i],
                            batch.labels.weight[stream][i] * keep[i])
                     for k, (name, stream) in SCORED.items()} for i in chosen}


def median_scores(per_site: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Median over sites of each scored variable (NaN scores left out; NaN if none)."""
    out = {}
    for k in SCORED:
        vals = [v[k] for v in per_site.values() if k in v and v[k] == v[k]]
        out[k] = statistics.median(vals) if vals else math.nan
    return out


def score_table(per_site: Mapping[str, Mapping[str, float]],
                order: Sequence[str] | None = None) -> str:
    """A markdown table: one row per site (``order``, default as given) and the median."""
    def cell(x):
        return "" if x != x else f"{x:.2f}"

    rows = ["| site | " + " | ".join(SCORED) + " |", "| --- |" + " --- |" * len(SCORED)]
    for s in order or list(per_site):
        if s in per_site:
            rows.append(f"| {s} | " + " | ".join(cell(per_site[s].get(k, math.nan))
                                                 for k in SCORED) + " |")
    med = median_scores(per_site)
    rows.append("| **median** | " + " | ".join(f"**{cell(med[k])}**" for k in SCORED) + " |")
    return "\n".join(rows)
