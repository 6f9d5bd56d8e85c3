"""The real-data experiment of docs/results.md: one shared network across the eight FLUXNET
sites (monthly), trained on the first half of each site's years and tested on the second;
then leave-two-sites-out runs (train on six sites, test on the two unseen ones).

    python benchmarks/fluxnet_sites.py --sites ../shared/data/fluxnet_sites --work /tmp/fluxnet \
        --out benchmarks/results/fluxnet_sites.json

Test NSE per site of monthly GPP, ET, NEE and LAI, warm-up year excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("US-Var", "AU-Stp"), ("FR-Pue", "AU-How"), ("DE-Hai", "FI-Hyy"), ("NL-Loo", "US-Ha1")]
VARS = {"GPP": ("gpp", "gpp_flux"), "ET": ("ET", "et_flux"), "NEE": ("nee", "nbe"),
        "LAI": ("lai", "lai")}  # score: (model output, observed stream)


def nse(sim, obs, w):
    m = w > 0
    if m.sum() < 3:
        return float("nan")
    o, s = obs[m].astype(np.float64), sim[m].astype(np.float64)
    sst = ((o - o.mean()) ** 2).sum()
    return float(1 - ((s - o) ** 2).sum() / sst) if sst > 0 else float("nan")


def site_scores(store_url: str, run_dir: str, time_half: str | None, warm_up: int = 12):
    """{site: {var: NSE}} over test time (time_half='test'), or all steps after warm-up."""
    from differland_dist.data.store import open_store
    from differland_dist.inference.compute import read_patches, simulate_batch
    from differland_dist.vocabulary.dalec_io import OUTPUTS
    from differland_dist.notebook.trained import TrainedModel

    tm = TrainedModel.from_checkpoint(run_dir)
    store = open_store(store_url)
    b = read_patches(tm, store, store.patch_ids)
    _, out = simulate_batch(tm, b)
    ids = [str(x) for x in np.asarray(store.array("site_id")[...])[b.pixel_index]]
    split = np.asarray(store.array("split")[...])[b.pixel_index]
    T = store.n_time
    sel = np.ones((len(ids), T), bool)
    sel[:, :warm_up] = False
    if time_half == "test":
        sel &= np.asarray(store.array("time_test")[...])[b.pixel_index] == 1
    res = {}
    for i, site in enumerate(ids):
        if time_half is None and split[i] != 1:
            continue
        res[site] = {k: nse(out[i, :, OUTPUTS.index(name)], b.labels.value[stream][i],
                            b.labels.weight[stream][i] * sel[i])
                     for k, (name, stream) in VARS.items()}
    return res


def calibrate_store(store: str, run: str, steps: int, workers: int):
    from differland_dist.config import load_config
    from differland_dist.distributed.trainer import calibrate

    cfg = load_config(ROOT / "configs" / "fluxnet_sites.yaml",
                      [f"data.url={store}", f"training.steps={steps}", f"ray.workers={workers}"])
    t0 = time.perf_counter()
    calibrate(cfg, run, resume=True)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", default=str(ROOT.parent / "shared" / "data" / "fluxnet_sites"))
    ap.add_argument("--work", default="/tmp/fluxnet")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=len(PAIRS))
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import ray

    from differland_dist.data.importers.sites import sites_to_store

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=max(2, a.workers), include_dashboard=False, log_to_driver=False)
    result = {"date": time.strftime("%Y-%m-%d"), "steps": a.steps, "workers": a.workers}
    store = str(work / "sites.zarr")
    sites_to_store(a.sites, store, monthly=True, overwrite=True)
    secs = calibrate_store(store, str(work / "run_time_split"), a.steps, a.workers)
    per_site = site_scores(store, str(work / "run_time_split"), "test")
    result["time_split"] = {"per_site": per_site, "seconds": secs,
                            "median": {k: statistics.median(v[k] for v in per_site.values() if v[k] == v[k])
                                       for k in VARS}}
    print(json.dumps(result["time_split"]["median"]), flush=True)
    lso = {}
    for pair in PAIRS[: a.pairs]:
        name = "+".join(pair)
        st = str(work / f"sites_{name}.zarr")
        sites_to_store(a.sites, st, monthly=True, test_sites=list(pair), overwrite=True)
        calibrate_store(st, str(work / f"run_{name}"), a.steps, a.workers)
        lso[name] = site_scores(st, str(work / f"run_{name}"), None)
        print(name, json.dumps(lso[name]), flush=True)
    unseen = {s: v for d in lso.values() for s, v in d.items()}
    result["leave_sites_out"] = {"per_site": unseen, "median": {
        k: statistics.median(v[k] for v in unseen.values() if v[k] == v[k]) for k in VARS}}
    print(json.dumps(result["leave_sites_out"]["median"]), flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
    ray.shutdown()


if __name__ == "__main__":
    main()
