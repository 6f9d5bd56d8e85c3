"""How predictable climate is from vegetation cover in the synthetic geography, per
``--pft-climate-coupling`` value, and the true PFT share of random structured truths there.

For each coupling c: cross-validated R² (the variance partition's recipe: gradient boosting,
GroupKFold by patch) of MAT, of MAP and of elevation from the ten PFT fractions; and, per seed
of ``--truth random-structured``, the median ``pft_share`` of the truth's parameters with
``r2_all >= 0.2`` (what ``analyze`` reports as the truth's headline). Predictors only, no DALEC.

    python benchmarks/pft_climate_coupling.py --resolution 10 --couplings 0 0.25 0.5 0.75 1 --seeds 0 3 8 \
        --partition-iterations 40 --json benchmarks/results/pft_climate_coupling_10deg.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from differland_dist import synthetic as synth
from differland_dist.synthetic import truth_design
from differland_dist.analysis.partition import cv_r2, standardise
from differland_dist.data import schema


def true_share(x: np.ndarray, design, pred: dict, patch: np.ndarray, max_iter: int) -> float:
    """Median pft_share = max(r2_PFT, 0) / r2_all over the design's driven parameters with
    r2_all >= 0.2 (the partition's recipe, only the two fits the share needs)."""
    pft = np.stack([pred[k] for k in schema.PREDICTOR_SETS["PFT"]], axis=1)
    allp = np.stack([pred[k] for k in synth.TRUTH_FEATURES], axis=1)
    shares = []
    for n in design.parameters:
        y = standardise(x[:, [list(synth.PARAM_NAMES_ALL).index(n)]])[:, 0]
        r2a = cv_r2(allp, y, patch, max_iter=max_iter)
        if r2a >= 0.2:
            shares.append(max(cv_r2(pft, y, patch, max_iter=max_iter), 0.0) / r2a)
    return float(np.median(shares)) if shares else float("nan")


def measure(resolution: float, couplings, seeds, geo_seed: int, max_iter: int) -> dict:
    g = synth.make_grid(resolution)
    pft = list(schema.PREDICTOR_SETS["PFT"])
    rows = []
    for c in couplings:
        t0 = time.time()
        pred = {k: np.asarray(v, np.float64) for k, v in
                synth.make_predictors(g.lat, g.lon, geo_seed, c).items()}
        X = np.stack([pred[k] for k in pft], axis=1)
        row = {"coupling": c, **{f"r2_{v}_from_PFT": cv_r2(X, pred[v], g.patch, max_iter=max_iter)
                                 for v in ("MAT", "MAP", "elevation")}}
        feats = np.stack([pred[k] for k in synth.TRUTH_FEATURES], axis=1)
        shares = {}
        for s in seeds:
            d = synth.random_structured_design(s)
            x = synth.apply_truth(synth.build_truth(d, s), feats, g.lat)
            shares[str(s)] = {"design_pft_weight": truth_design.design_pft_weight(s),
                              "median_pft_share": true_share(x, d, pred, g.patch, max_iter)}
        row["random_structured_true_share"] = shares
        row["seconds"] = time.time() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"resolution_deg": resolution, "pixels": int(g.lat.size), "geography_seed": geo_seed,
            "partition_iterations": max_iter, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=float, default=5.0)
    ap.add_argument("--couplings", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--geo-seed", type=int, default=0)
    ap.add_argument("--partition-iterations", type=int, default=60)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    res = measure(a.resolution, a.couplings, a.seeds, a.geo_seed, a.partition_iterations)
    res["command"] = "python benchmarks/pft_climate_coupling.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(a).items() if v is not None and k != "json")
    res["machine"] = "2-core VM, no GPU"
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
