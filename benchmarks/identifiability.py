"""Why are the true parameters recovered poorly? Measurements on a `differland demo` output.

Usage: python benchmarks/identifiability.py DEMO_OUT [--pixels 64] [--json OUT.json]

1. Recovery decomposed (unbounded space, every pixel): R², r, bias and the learnt/true spatial
   sd ratio, for the trained and the untrained network, next to the truth's spatial sd and its
   1-99 % spread as a fraction of the parameter's range.
2. Sensitivity at the truth: DALEC on ``--pixels`` training pixels with the true parameters and
   with each unbounded parameter raised by its own spatial sd; the change of SIF, LAI, ET and
   NBE in units of the synthetic observation noise (chi = sqrt(sum((delta / noise)^2) / n)).
   A parameter whose spatial variation moves the observations by much less than the noise
   cannot be mapped from them.
3. Equifinality: the normalised Jacobian's columns (finite differences, step 0.05 in unbounded
   space); pairs with |cosine| > 0.95 trade off against each other; and the Cramér-Rao sd of a
   single pixel's parameters (sqrt(diag(inv(J'J)))) against the truth's spatial sd.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _noise_sd(name: str, v: np.ndarray) -> np.ndarray:
    # the synthetic observation noise of differland_dist.synthetic.make_observations
    if name == "SIF":
        return np.sqrt(0.05 ** 2 + (0.08 * v) ** 2)
    if name == "lai":
        return np.sqrt(0.05 ** 2 + (0.1 * v) ** 2)
    if name == "ET":
        return np.sqrt(0.1 ** 2 + (0.1 * v) ** 2)
    return np.full_like(v, 0.2)  # nbe (patch-level noise 0.2, applied per pixel here)


STREAMS = ("SIF", "lai", "ET", "nbe")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("demo_out")
    ap.add_argument("--pixels", type=int, default=64)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from differland_dist.analysis.inputs import unbounded
    from differland_dist.analysis.truth import truth_range_fraction
    from differland_dist.data.batch import assemble_forcing
    from differland_dist.data.store import open_store
    from differland_dist.synthetic import run_dalec
    from differland_dist.vocabulary.parameters import all_bounds
    from differland_dist.vocabulary.parameters import PARAM_NAMES
    from differland_dist.inference.output import open_output
    from differland_dist.vocabulary.series import param_var
    from differland_dist.vocabulary.parameters import to_bounded

    t0 = time.time()
    store = open_store(f"{a.demo_out}/earth.zarr", validate=False)
    ds = store.ds
    names = list(PARAM_NAMES)
    true_x = np.asarray(ds["true_x"].values, np.float64)
    lo, hi = all_bounds()
    res: dict = {"parameters": {n: {} for n in names}}
    frac = truth_range_fraction(to_bounded(true_x, lo, hi))
    tsd = true_x.std(axis=0)
    for tag in ("trained", "untrained"):
        g = open_output(f"{a.demo_out}/{'inference' if tag == 'trained' else 'untrained'}.zarr")
        x = unbounded(np.stack([np.asarray(g[param_var(n)][:]) for n in names], axis=1))
        for j, n in enumerate(names):
            t, y = true_x[:, j], x[:, j]
            sst = np.sum((t - t.mean()) ** 2)
            res["parameters"][n][tag] = {
                "r2": float(1 - np.sum((t - y) ** 2) / sst), "r": float(np.corrcoef(t, y)[0, 1]),
                "bias_over_truth_sd": float((y.mean() - t.mean()) / tsd[j]),
                "sd_ratio": float(y.std() / tsd[j])}
    for j, n in enumerate(names):
        res["parameters"][n].update(truth_sd_unbounded=float(tsd[j]), truth_range_fraction=float(frac[j]))

    # sensitivity and Jacobian on training pixels
    rng = np.random.default_rng(0)
    train = np.flatnonzero(np.asarray(store.split) == 0)
    pix = np.sort(rng.choice(train, size=min(a.pixels, train.size), replace=False))
    v = {k: np.asarray(ds[k].values)[pix] if ds[k].dims[0] == "pixel" else np.asarray(ds[k].values)
         for k in ("t_min", "t_max", "swrad", "vpd", "precip", "burned_area", "co2", "doy", "delta_t",
                   "MAT", "MAP", "time")}
    v["lat"] = np.asarray(ds["lat"].values)[pix]
    forcing = assemble_forcing(v)
    x0 = true_x[pix]

    def sim(x):
        out = run_dalec(forcing, to_bounded(x, lo, hi), chunk=len(pix))
        return {k: out[k][:, 12:] for k in STREAMS}  # after the first (warm-up) year

    base = sim(x0)
    sd = {k: _noise_sd(k, base[k]) for k in STREAMS}
    n_obs = sum(base[k].size for k in STREAMS)
    cols = []
    for j, n in enumerate(names):
        x1 = x0.copy()
        x1[:, j] += tsd[j]
        s1 = sim(x1)
        chi = {k: float(np.sqrt(np.mean(((s1[k] - base[k]) / sd[k]) ** 2))) for k in STREAMS}
        h = 0.05
        x2 = x0.copy()
        x2[:, j] += h
        s2 = sim(x2)
        cols.append(np.concatenate([((s2[k] - base[k]) / sd[k] / h).ravel() for k in STREAMS]))
        res["parameters"][n]["chi_per_truth_sd"] = chi
        res["parameters"][n]["chi_total_per_truth_sd"] = float(np.sqrt(sum(
            np.sum(((s1[k] - base[k]) / sd[k]) ** 2) for k in STREAMS) / n_obs))
    J = np.stack(cols, axis=1)  # (obs, K) per unit unbounded change, in noise units
    norm = np.linalg.norm(J, axis=0)
    C = (J / np.where(norm > 0, norm, 1)).T @ (J / np.where(norm > 0, norm, 1))
    pairs = [(names[i], names[k], float(C[i, k])) for i in range(len(names)) for k in range(i + 1, len(names))
             if abs(C[i, k]) > 0.95]
    res["equifinal_pairs"] = sorted(pairs, key=lambda p: -abs(p[2]))
    # per pixel: J restricted to one pixel's rows -> Cramér-Rao sd, median over pixels
    P, T = len(pix), base["SIF"].shape[1]
    crs = []
    for p in range(P):
        rows = np.concatenate([np.arange(i * P * T + p * T, i * P * T + (p + 1) * T) for i in range(len(STREAMS))])
        F = J[rows].T @ J[rows]
        # a tiny ridge: a direction the data do not see gets a huge (not a zero) bound
        F = F + 1e-9 * max(np.trace(F) / F.shape[0], 1e-12) * np.eye(F.shape[0])
        crs.append(np.sqrt(np.clip(np.diag(np.linalg.inv(F)), 0, None)))
    cr = np.median(np.stack(crs), axis=0)
    for j, n in enumerate(names):
        res["parameters"][n]["cramer_rao_sd_per_pixel"] = float(cr[j])
        res["parameters"][n]["cramer_rao_over_truth_sd"] = float(cr[j] / tsd[j])
    res["jacobian_rank"] = int(np.linalg.matrix_rank(J, tol=1e-6 * np.linalg.norm(J, 2)))
    res["jacobian_singular_values"] = [float(s) for s in np.linalg.svd(J, compute_uv=False)]
    res["pixels"] = int(P)
    res["seconds"] = time.time() - t0
    print(f"{'parameter':22s} {'range%':>7s} {'truth sd':>8s} {'R2':>7s} {'r':>6s} {'bias/sd':>8s} "
          f"{'sd ratio':>8s} {'chi(1sd)':>8s} {'CR/sd':>7s}")
    for n in names:
        q = res["parameters"][n]
        print(f"{n:22s} {100 * q['truth_range_fraction']:7.2f} {q['truth_sd_unbounded']:8.3f} "
              f"{q['trained']['r2']:7.1f} {q['trained']['r']:6.2f} {q['trained']['bias_over_truth_sd']:8.1f} "
              f"{q['trained']['sd_ratio']:8.2f} {q['chi_total_per_truth_sd']:8.3f} {q['cramer_rao_over_truth_sd']:7.1e}")
    print("equifinal pairs (|cos| > 0.95):", res["equifinal_pairs"][:20])
    print("Jacobian rank", res["jacobian_rank"], "of", len(names), f"({res['seconds']:.0f} s)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
