"""The simulation study of the analysis method (issue 25): N random truth designs, each
through ``differland synth`` -> a reduced experiment grid -> ``differland analyze``; per design
the true and estimated PFT shares, PCA cosines, SHAP rho and the precision/recall of the
real-data trust marker (ensemble spread) against the truly identifiable parameters.

    python benchmarks/twin_study.py --designs 12 --work /scratch/twin \\
        --json benchmarks/results/twin_study.json --figure docs/figures/twin_study.png

Each finished design is appended to the JSON at once (atomic rewrite) and skipped by a rerun,
so the study resumes. ``--smoke`` runs the smallest size (10 degrees, 2 years, 2 members x 150
steps, small SHAP): a check that the driver works end to end, not a result.

Designs: ``--truth random-structured --seed S`` for S = first_seed, ...; its PFT weight is
frac(S x 0.618) (synthetic/truth_design.py), so consecutive seeds cover PFT-free to PFT-only.
The geography uses ``--pft-climate-coupling`` (default COUPLING; docs/data.md).

The targets were fixed in this file before any result existed (issue 25):
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: Fixed before results (issue 25). "reported < 1/2" means the report's headline decision is
#: "environment" (its whole interval below 1/2), "> 1/2" that it is "PFT".
TARGETS = {
    "median_abs_error_of_median_share_max": 0.10,
    "spearman_estimated_vs_true_min": 0.8,
    "low_truth_max": 0.3, "low_truth_reported": "environment",
    "high_truth_min": 0.7, "high_truth_reported": "PFT",
    "min_designs": 12,
}
COUPLING = 0.25  # MAT from PFT fractions: cv R2 0.70 at 10 deg (docs/data.md), the assumed real-Earth 0.7-0.8
SIZES = {
    "study": {"resolution": 5, "years": 4, "config": "configs/experiment_twin.yaml", "set": [],
              "analyze": ["--shap-pixels", "100", "--shap-background", "30", "--shap-nsamples", "256",
                          "--partition-iterations", "60", "--bootstrap", "20"]},
    "smoke": {"resolution": 10, "years": 2, "config": "configs/experiment_demo.yaml",
              "set": ["members=2", "keep_best=2", "base.network.head_init_scale=0.1"],
              "analyze": ["--shap-pixels", "16", "--shap-background", "8", "--shap-nsamples", "64",
                          "--partition-iterations", "30", "--bootstrap", "8", "--no-figures"]},
}


def _run(cmd: list[str], log) -> None:
    t = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write(f"$ {' '.join(cmd)}\n{r.stdout}\n({time.time() - t:.0f} s, rc {r.returncode})\n")
    log.flush()
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[:2]} failed (rc {r.returncode}); see the log")


def _write_atomic(path: str, obj) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def design_result(summary: dict) -> dict:
    """The study's numbers of one design from ``analyze``'s summary.json."""
    idf = summary["identifiability"]
    ident = idf["identifiable"]
    vp, vpt = summary["variance_partition"]["parameters"], summary["variance_partition_truth"]["parameters"]
    per = {n: {"estimated": vp[n]["pft_share"], "true": vpt[n]["pft_share"],
               "interval": summary["findings"]["shares"][n]["interval"],
               "decision": summary["findings"]["shares"][n]["decision"]} for n in ident}
    hl = summary["findings"]["headline"]
    pinned = [n for n, v in summary["uncertainty"]["parameters"].items() if v["pinned"]]
    tp = len(set(pinned) & set(ident))
    sh = summary["shap"]
    crit = {c["name"]: {"value": c["value"], "passed": c["passed"]}
            for c in summary["truth_check"]["criteria"]}
    return {
        "identifiable": ident, "per_parameter_share": per,
        "estimated_median_share": hl["median_pft_share"], "interval": hl["interval"],
        "decision": hl["decision"], "true_median_share": hl.get("truth_median_pft_share"),
        "true_median_share_all_explainable": summary["variance_partition_truth"]["summary"]["median_pft_share"],
        "pca_cosines": summary.get("pca_cosines"), "pca_cosines_all": summary.get("pca_cosines_all"),
        "shap_rho_pooled": sh.get("spearman_vs_truth_pooled_identifiable"),
        "shap_rho_per_parameter": {n: v for n, v in (sh.get("spearman_vs_truth") or {}).items() if n in ident},
        "pinned": pinned,
        "trust_marker_precision": tp / len(pinned) if pinned else None,
        "trust_marker_recall": tp / len(ident) if ident else None,
        "truth_check": crit, "findings": summary["findings"]["significant"],
    }


def evaluate(designs: list[dict]) -> dict:
    """The targets over the finished designs (None where there are too few to say)."""
    from scipy import stats

    ok = [d for d in designs if d["estimated_median_share"] is not None and d["true_median_share"] is not None]
    err = [abs(d["estimated_median_share"] - d["true_median_share"]) for d in ok]
    rho = (float(stats.spearmanr([d["estimated_median_share"] for d in ok],
                                 [d["true_median_share"] for d in ok]).statistic) if len(ok) >= 3 else None)
    low = [d for d in ok if d["true_median_share"] <= TARGETS["low_truth_max"]]
    high = [d for d in ok if d["true_median_share"] >= TARGETS["high_truth_min"]]
    return {"designs": len(designs), "with_a_headline": len(ok),
            "median_abs_error": float(np.median(err)) if err else None,
            "spearman": rho,
            "low_truth_reported_environment": [d["decision"] == TARGETS["low_truth_reported"] for d in low],
            "high_truth_reported_pft": [d["decision"] == TARGETS["high_truth_reported"] for d in high],
            "targets_met": None if len(designs) < TARGETS["min_designs"] else bool(
                err and np.median(err) <= TARGETS["median_abs_error_of_median_share_max"]
                and rho is not None and rho >= TARGETS["spearman_estimated_vs_true_min"]
                and low and all(d["decision"] == "environment" for d in low)
                and high and all(d["decision"] == "PFT" for d in high))}


def figure(designs: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=110)
    for d in designs:
        t, e, iv = d["true_median_share"], d["estimated_median_share"], d["interval"] or [None, None]
        if t is None or e is None:
            continue
        yerr = None if iv[0] is None else [[max(e - iv[0], 0)], [max(iv[1] - e, 0)]]
        ax.errorbar([t], [e], yerr=yerr, fmt="o", ms=4, capsize=2,
                    color={"PFT": "#d95f02", "environment": "#1b9e77"}.get(d["decision"], "0.4"))
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8)
    ax.axhline(0.5, color="0.8", lw=0.6), ax.axvline(0.5, color="0.8", lw=0.6)
    ax.set_xlim(0, 1.05), ax.set_ylim(0, 1.05)
    ax.set_xlabel("true median PFT share (identifiable parameters)")
    ax.set_ylabel("estimated (95 % bootstrap interval)")
    ax.set_title(f"{len(designs)} design(s); colour: decision", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--designs", type=int, default=12)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--coupling", type=float, default=COUPLING)
    ap.add_argument("--work", required=True, help="scratch directory (stores, experiments)")
    ap.add_argument("--json", required=True)
    ap.add_argument("--figure", default=None)
    ap.add_argument("--smoke", action="store_true", help="the smallest size (a driver check)")
    ap.add_argument("--keep", action="store_true", help="keep each design's store and experiment")
    a = ap.parse_args(argv)
    size = SIZES["smoke" if a.smoke else "study"]
    os.makedirs(a.work, exist_ok=True)
    res = json.loads(Path(a.json).read_text()) if os.path.exists(a.json) else {
        "targets": TARGETS, "size": "smoke" if a.smoke else "study", "settings": size,
        "coupling": a.coupling, "machine": "2-core VM, no GPU", "designs": {}}
    if res["coupling"] != a.coupling or res["size"] != ("smoke" if a.smoke else "study"):
        sys.exit(f"{a.json} was made with another size or coupling: use another --json")
    exe = [sys.executable, "-m", "differland_dist.cli.main"]
    with open(os.path.join(a.work, "twin_study.log"), "a") as log:
        for seed in range(a.first_seed, a.first_seed + a.designs):
            if str(seed) in res["designs"]:
                continue
            t0 = time.time()
            store, exp = os.path.join(a.work, f"earth_{seed}.zarr"), os.path.join(a.work, f"exp_{seed}")
            for p in (store, exp):  # a design interrupted half-way starts again
                shutil.rmtree(p, ignore_errors=True)
            _run(exe + ["synth", "--out", store, "--resolution", str(size["resolution"]), "--years",
                        str(size["years"]), "--seed", str(seed), "--truth", "random-structured",
                        "--pft-climate-coupling", str(a.coupling)], log)
            sets = [x for s in size["set"] for x in ("--set", s)]
            _run(exe + ["experiment", size["config"], "--out", exp, "--set", f"base.data.url={store}", *sets], log)
            _run(exe + ["analyze", exp, *size["analyze"]], log)
            summary = json.loads(Path(exp, "analysis", "summary.json").read_text())
            r = design_result(summary)
            r["seconds"] = time.time() - t0
            from differland_dist.synthetic.truth_design import design_pft_weight

            r["design_pft_weight"] = design_pft_weight(seed)
            res["designs"][str(seed)] = r
            res["evaluation"] = evaluate(list(res["designs"].values()))
            _write_atomic(a.json, res)
            print(f"design {seed}: true {r['true_median_share']} estimated {r['estimated_median_share']} "
                  f"{r['interval']} ({r['decision']}), {r['seconds']:.0f} s", flush=True)
            if not a.keep:
                for p in (store, exp):
                    shutil.rmtree(p, ignore_errors=True)
    if a.figure and res["designs"]:
        figure(list(res["designs"].values()), a.figure)
    print(json.dumps(res.get("evaluation"), indent=1))


if __name__ == "__main__":
    main()
