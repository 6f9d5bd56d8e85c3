"""The real-data experiments of docs/results.md on FLUXNET sites, and the page itself.

    # time split (first half of each site's years -> second half), one run per variant:
    python benchmarks/fluxnet_sites.py time-split --sites SITES --work /tmp/fluxnet \
        --variants shared site --out benchmarks/results/fluxnet_sites.json
    # leave-sites-out cross-validation per predictor combination (differland cv-sites):
    python benchmarks/fluxnet_sites.py cv --sites SITES --work /tmp/fluxnet --folds 4 \
        --predictors PFT PFT+CLIM --out benchmarks/results/fluxnet_sites.json
    # docs/results.md from the JSON results (no training):
    python benchmarks/fluxnet_sites.py render --out docs/results.md

SITES is a directory with ``site_coords.csv`` and ``<SITE_ID>.nc`` files (the ``drivers/``
folder of the public DifferLand v1.0 repository, or the eight-site copy the tests use). Results
are merged into the JSON file under a key per site set (``--label``, default: the number of
sites), so runs can be added one at a time. Scores: monthly NSE per site of GPP, ET, NEE, LAI,
warm-up year excluded, observed months only (differland_dist.experiment.site_scores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "fluxnet_sites.yaml"
#: Published per-site DifferLand v1.0 calibrations, median monthly test NSE (16 sites).
PUBLISHED = {"GPP": 0.79, "ET": 0.79, "NEE": 0.29, "LAI": 0.85}
#: Time-split variants: name -> (config overrides, store option, what it tests).
VARIANTS: dict[str, tuple[list[str], dict, str]] = {
    "shared": ([], {}, "one network for all sites, predictors PFT+CLIM (the config as is)"),
    "site": (["data.predictors=SITE"], {},
             "per-site baseline: SITE predictors, every site its own parameters"),
    "et_lai_x3": (["loss.weights.et_flux=3", "loss.weights.lai=3"], {},
                  "ET and LAI stream weights 3 (others 1)"),
    "unc": ([], {"weights_from_unc": True}, "observation weights 1/unc^2 (import --weights-from-unc)"),
    "steps_4000": (["training.steps=4000"], {}, "4000 steps instead of 1500"),
    "et_lai_x3_4000": (["loss.weights.et_flux=3", "loss.weights.lai=3", "training.steps=4000"],
                       {}, "ET and LAI weights 3 and 4000 steps"),
    "edc_1": (["loss.weights.edc=1"], {}, "EDC weight 1 instead of 0.1"),
    "lr_001": (["optimizer.learning_rate=0.01"], {}, "learning rate 0.01 instead of 0.003"),
    "pft_only": (["data.predictors=PFT"], {}, "one network, predictors PFT only"),
}


def _store(sites: str, work: Path, **opts) -> str:
    from differland_dist.data.importers.sites import sites_to_store

    name = "sites" + "".join(f"_{k}" for k, v in sorted(opts.items()) if v) + ".zarr"
    url = str(work / name)
    if not Path(url).exists():
        sites_to_store(sites, url, monthly=True, **opts)
    return url


def _merge(out: Path, label: str, key: str, value) -> None:
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault(label, {}).setdefault(key, {}).update(value)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(out)


def time_split(a) -> None:
    from differland_dist.config import load_config
    from differland_dist.distributed.trainer import calibrate
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    for name in a.variants:
        overrides, opts, what = VARIANTS[name]
        store = _store(a.sites, work, **opts)
        sets = [f"data.url={store}", f"ray.workers={a.workers}", *overrides,
                *([f"training.steps={a.steps}"] if a.steps else [])]
        cfg = load_config(CONFIG, sets)
        run = work / f"run_{name}"
        t0 = time.perf_counter()
        calibrate(cfg, str(run), resume=True)
        record(a, name, str(run), store, time.perf_counter() - t0)


def record(a, name: str, run: str, store: str, secs: float) -> None:
    """Score the time-split run ``run`` of variant ``name`` and merge it into ``a.out``."""
    from differland_dist.experiment.site_scores import median_scores, site_scores
    from differland_dist.runs import load_trained

    overrides, opts, what = VARIANTS[name]
    per_site = site_scores(run, store, "test_time")
    med = median_scores(per_site)
    print(name, json.dumps(med), flush=True)
    _merge(Path(a.out), a.label or str(len(per_site)), "time_split", {name: {
        "what": what, "overrides": overrides, "store": opts,
        "steps": load_trained(run).step, "seconds": secs, "date": time.strftime("%Y-%m-%d"),
        "per_site": per_site, "median": med,
        "train_median": median_scores(site_scores(run, store, "train_time"))}})


def cross_validate(a) -> None:
    from differland_dist.experiment.site_cv import CVPlan, parse_folds, run_site_cv

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    store = _store(a.sites, work)
    plan = CVPlan(config=str(CONFIG), overrides=(f"data.url={store}", f"ray.workers={a.workers}",
                                                 *([f"training.steps={a.steps}"] if a.steps else [])),
                  predictor_sets=tuple(tuple(c.split("+")) for c in a.predictors),
                  folds=parse_folds(a.folds), work=str(work / f"cv_{a.folds}"))
    r = run_site_cv(plan)
    key = f"cv_{a.folds}"
    _merge(Path(a.out), a.label or str(len(r["sites"])), key, {
        "folds": r["folds"], "steps": r["steps"], "date": r["date"], "sets": r["sets"]})
    print(key, json.dumps({k: v["median"] for k, v in r["sets"].items()}), flush=True)


def published(a) -> None:
    """Monthly test NSE, on our store's observations and test months, of the published per-site
    daily runs (``<dir>/daily_<SITE>_<kind>_<n>.nc``: the output_nc/ folder of the public
    repository): their daily outputs averaged over each calendar month of the site's days."""
    import glob

    import numpy as np
    import xarray as xr

    from differland_dist.experiment.site_scores import SCORED, median_scores, nse

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    st = xr.open_zarr(_store(a.sites, work), zarr_format=3, consolidated=True, decode_times=False)
    per_site = {}
    for i, site in enumerate(st.site_id.values.astype(str)):
        files = sorted(glob.glob(str(Path(a.published_dir) / f"daily_{site}_{a.kind}_*.nc")))
        if not files:
            continue
        out = xr.open_dataset(files[0], decode_times=False)
        n_days = out.sizes[next(iter(out.sizes))]
        y0 = st.attrs["site_years"][site][0]
        days = np.datetime64(f"{y0}-01-01") + np.arange(n_days).astype("timedelta64[D]")
        month = (days.astype("datetime64[M]") - days[0].astype("datetime64[M]")).astype(int)
        n_m = month.max() + 1
        keep = np.zeros(st.sizes["time"], bool)
        keep[12:n_m] = True  # warm-up year out, as for our runs
        keep &= st.time_test.values[i] == 1
        scores = {}
        for k, (name, stream) in SCORED.items():
            sim = np.bincount(month, np.asarray(out[name].values, np.float64)) / np.bincount(month)
            prod = "nbe" if stream == "nbe" else stream
            obs = st[f"obs_{prod}"].values[i, :n_m]
            w = st[f"obs_{prod}_weight"].values[i, :n_m] * keep[:n_m]
            scores[k] = nse(sim, obs, w)
        per_site[site] = scores
        print(site, Path(files[0]).name, json.dumps(scores), flush=True)
    _merge(Path(a.out), a.label or str(st.sizes["pixel"]), "published", {a.kind: {
        "what": f"published per-site daily DifferLand v1.0 runs ({a.kind}), monthly means",
        "per_site": per_site, "median": median_scores(per_site)}})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for name, fn in (("time-split", time_split), ("cv", cross_validate), ("published", published)):
        p = sub.add_parser(name)
        p.set_defaults(fn=fn)
        p.add_argument("--sites", default=str(ROOT.parent / "shared" / "data" / "fluxnet_sites"))
        p.add_argument("--work", default="/tmp/fluxnet")
        p.add_argument("--steps", type=int, default=None, help="default: the config's")
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--label", default=None, help="result key (default: number of sites)")
        p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fluxnet_sites.json"))
    sub.choices["time-split"].add_argument("--variants", nargs="+", default=["shared", "site"],
                                           choices=list(VARIANTS))
    sub.choices["published"].add_argument("--published-dir", required=True)
    sub.choices["published"].add_argument("--kind", default="baseline")
    sub.choices["cv"].add_argument("--folds", default="loo")
    sub.choices["cv"].add_argument("--predictors", nargs="+", default=["PFT", "PFT+CLIM"])
    p = sub.add_parser("render")
    p.set_defaults(fn=None)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "fluxnet_sites.json"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    a = ap.parse_args(argv)
    if a.fn is None:
        from results_page import render  # benchmarks/results_page.py

        Path(a.out).write_text(render(json.loads(Path(a.results).read_text()), PUBLISHED, VARIANTS))
        return
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    a.fn(a)


if __name__ == "__main__":
    main()
