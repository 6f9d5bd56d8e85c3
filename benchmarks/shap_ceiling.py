"""How well can SHAP rankings of a learnt network agree with the truth's at all?

Usage: python benchmarks/shap_ceiling.py STORE [--seeds 0 1 2] [--pooled-over P ...] [--json OUT.json]

STORE is a structured synthetic Earth (``differland synth --truth structured``). For each
seed, a network (scikit-learn MLP, three hidden layers of 32 like the demo's) is fitted
directly to the true unbounded maps of the parameters in ``synthetic.STRUCTURE`` from the
twenty predictors and sigmoid(lat): the best any calibration could learn, with no DALEC, no
noise and no unidentifiable parameters in the way. Kernel SHAP (the analysis' settings: 60
pixels, background 20, 200 coalitions) then explains it and the truth, and the script prints:

- ``fit_r``: the fitted maps' correlation with the truth (median and worst parameter);
- ``rho``: per parameter, Spearman rho of mean |SHAP| per predictor, fit vs truth;
- ``pooled``: the same rho for the importance profile pooled over the parameters
  (``analysis.truth.importance_profile``); ``pooled_over``: the same over the parameters named
  by ``--pooled-over`` (e.g. those an experiment identified: the check's own pool);
- ``truth_vs_truth``: the truth against itself explained on another pixel, background and
  coalition sample: the estimator's own noise.

A fit can reproduce every map and still attribute it to other, correlated predictors (PFTs
follow climate): the per-parameter rho of a near-perfect fit is the ceiling of what the truth
check can ask (docs/analysis.md, issue 14).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pooled-over", nargs="+", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import xarray as xr
    from scipy import stats
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    from differland_dist import synthetic as synth
    from differland_dist.analysis import shap_values as shp
    from differland_dist.analysis.partition import GROUPS
    from differland_dist.analysis.truth import importance_profile

    ds = xr.open_zarr(a.store, zarr_format=3, consolidated=False)
    preds = [n for g in ("PFT", "CLIM", "SOIL", "AGE") for n in GROUPS[g]]
    feats = preds + ["lat"]
    F = np.stack([ds[n].values.astype(float) for n in preds] + [ds["lat"].values.astype(float)], 1)
    names = list(synth.PARAM_NAMES_ALL)
    pick = list(synth.STRUCTURE)
    x = ds["true_x"].values.astype(float)[:, [names.index(n) for n in pick]]
    truth = synth.Truth(*(np.asarray(ds[k].values, np.float64) for k in (
        "truth_centre", "truth_scale", "truth_w1", "truth_b1", "truth_w2", "truth_b2_north",
        "truth_b2_south")))
    synth_truth = shp.TruthFunction(truth, feats)
    cols = [names.index(n) for n in pick]

    def network_input(X):
        X = np.asarray(X, float).copy()
        X[:, -1] = 1.0 / (1.0 + np.exp(-X[:, -1]))  # the network sees sigmoid(lat)
        return X

    def true_maps(X):
        return synth_truth(X)[:, cols]

    out = {"store": a.store, "parameters": pick, "seeds": {}}
    for seed in a.seeds:
        xs, ys = StandardScaler().fit(network_input(F)), StandardScaler().fit(x)
        m = MLPRegressor(hidden_layer_sizes=(32, 32, 32), max_iter=3000, tol=1e-7,
                         random_state=seed).fit(xs.transform(network_input(F)), ys.transform(x))

        def fitted(X, m=m, xs=xs, ys=ys):
            return ys.inverse_transform(m.predict(xs.transform(network_input(X))))

        fit = fitted(F)
        fit_r = [float(np.corrcoef(fit[:, j], x[:, j])[0, 1]) for j in range(len(pick))]
        opt = shp.ShapOptions(pixels=60, background=20, nsamples=200, executor="local", seed=seed)
        ex = shp.explain({"fit": fitted, "truth": true_maps}, F, opt)
        again = shp.explain({"truth": true_maps}, F, shp.ShapOptions(
            pixels=60, background=20, nsamples=200, executor="local", seed=seed + 10))
        mf, mt = shp.mean_abs(ex["values"]["fit"]), shp.mean_abs(ex["values"]["truth"])
        mt2 = shp.mean_abs(again["values"]["truth"])
        rho = {n: float(stats.spearmanr(mf[:, j], mt[:, j]).statistic) for j, n in enumerate(pick)}
        tt = [float(stats.spearmanr(mt2[:, j], mt[:, j]).statistic) for j in range(len(pick))]
        pooled = float(stats.spearmanr(importance_profile(mf, pick, pick),
                                       importance_profile(mt, pick, pick)).statistic)
        sub = [n for n in (a.pooled_over or []) if n in pick]
        pooled_sub = (float(stats.spearmanr(importance_profile(mf, pick, sub),
                                            importance_profile(mt, pick, sub)).statistic) if sub else None)
        r = {"fit_r_median": float(np.median(fit_r)), "fit_r_min": float(min(fit_r)), "rho": rho,
             "pooled_over": sub, "pooled_over_rho": pooled_sub,
             "rho_median": float(np.median(list(rho.values()))), "rho_min": float(min(rho.values())),
             "pooled": pooled, "truth_vs_truth_median": float(np.median(tt)),
             "truth_vs_truth_min": float(min(tt))}
        out["seeds"][seed] = r
        print(f"seed {seed}: fit r median {r['fit_r_median']:.3f} (worst {r['fit_r_min']:.3f}); "
              f"per-parameter rho median {r['rho_median']:.2f} (worst {r['rho_min']:.2f}); pooled "
              f"{pooled:.2f}" + (f" ({pooled_sub:.2f} over {len(sub)})" if sub else "")
              + f"; truth vs itself median {r['truth_vs_truth_median']:.2f} (worst "
              f"{r['truth_vs_truth_min']:.2f})", flush=True)
    left_out = [n for n in (a.pooled_over or []) if n not in out["parameters"]]
    if left_out:  # the fit covers the structured parameters only
        print(f"--pooled-over: {left_out} not in synthetic.STRUCTURE, left out of the pool")
    out["pooled_over_left_out"] = left_out
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
