"""``differland analyze``: every analysis of an experiment directory, written to ``analysis/``.

Layout (``OUT``, default ``EXPERIMENT_DIR/analysis``)::

    generalisation.json        test skill per set and stream, difference to PFT-only, paired test
    variance_partition.json    per parameter r2_all, r2_<group>, pft_share, direct_share (+ truth)
    gradients.json             PCA: explained variance, loadings, predictor correlations
    gradients.zarr             loadings (component, param), scores (pixel, component), score maps
    shap.json, shap.zarr       mean |SHAP| per predictor and parameter (members, mean, sd; truth)
    uncertainty.json/.zarr     ensemble sd / spatial sd per parameter (and per pixel)
    identifiability.json       recovery of the true parameters (synthetic stores)
    truth_check.json           the criteria against the truth (synthetic stores)
    summary.json, report.md, figures/*.png
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Sequence

import numpy as np

from differland_dist.analysis.cf_store import cf_dataset
from differland_dist.analysis import bootstrap as boot
from differland_dist.analysis import findings as fnd
from differland_dist.analysis import gradients as grad
from differland_dist.analysis import generalisation as gen_mod
from differland_dist.analysis import inputs, report, settings
from differland_dist.analysis import shap_paper
from differland_dist.analysis import shap_values as shp
from differland_dist.analysis import truth as tr
from differland_dist.analysis import uncertainty as unc
from differland_dist.analysis.partition import GROUPS, variance_partition
from differland_dist.data.store import zarr_store
from differland_dist.errors import DifferlandError
from differland_dist.inference.output import PARAM_NAMES
from differland_dist.storage.location import Location, join
from differland_dist.model import calendar
from differland_dist.model.parameters import all_bounds, to_bounded

log = logging.getLogger(__name__)

ANALYSIS_KIND = "experiment-analysis"
ENTRIES = ["generalisation.json", "variance_partition.json", "gradients.json", "gradients.zarr",
           "shap.json", "shap.zarr", "uncertainty.json", "uncertainty.zarr", "identifiability.json",
           "truth_check.json", "summary.json", "report.md", "figures", "shap_paper.json"]


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if k != "arrays"}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _write_zarr(url: str, so: dict, data_vars: dict, coords: dict, attrs: dict | None = None) -> None:
    ds = cf_dataset(data_vars, coords, attrs)  # units, Conventions, provenance
    ds.to_zarr(zarr_store(Location(url, so), read_only=False), mode="w", zarr_format=3, consolidated=False)


def run_analysis(url: str, out: str | None = None, *, sets: Sequence[str] | None = None,
                 params: Sequence[str] | None = None, storage_options: dict | None = None,
                 out_storage_options: dict | None = None, shap: shp.ShapOptions | None = None,
                 partition_max_iter: int = 100, n_splits: int = 5, seed: int = 0,
                 figures: bool = True, shap_recipe: str = "members",
                 paper_shap: dict | None = None, bootstrap: int = boot.N_RESAMPLES) -> dict:
    """Run every analysis on experiment directory ``url`` and write them to ``out``.

    Args:
      sets: predictor sets to analyse (default: every set with kept members); the full set
        (most predictors) is the one partitioned, decomposed and explained.
      params: parameters (default: all 40).
      shap: SHAP sample sizes and executor (None: defaults; ``ShapOptions(pixels=...)``).
      shap_recipe: "members" (each member in unbounded space, shap.json) or "paper": also the
        paper's recipe (analysis/shap_paper.py, shap_paper.json); ``paper_shap``: keyword
        arguments of :func:`shap_paper.for_experiment` (sizes, defects).
      bootstrap: resamples of the intervals (analysis/bootstrap.py; 0: none, every share
        is then reported as undecided).
    Returns the summary (also ``summary.json``).
    """
    t0 = time.time()
    so = dict(storage_options or {})
    oso = dict(so if out_storage_options is None else out_storage_options)
    names = list(params) if params else list(PARAM_NAMES)
    bad = [p for p in names if p not in PARAM_NAMES]
    if bad:
        raise DifferlandError(f"--params {bad}: unknown parameter(s); known: {', '.join(PARAM_NAMES)}")
    if shap_recipe not in shap_paper.RECIPES:
        raise DifferlandError(f"--shap-recipe: {shap_recipe!r}, expected one of {list(shap_paper.RECIPES)}")
    if len(names) < 3:
        raise DifferlandError(f"--params: at least 3 parameters are needed (PCA of 3 components), "
                              f"got {names}")
    out = out or join(url, "analysis")
    loc = Location(out, oso)
    replace = loc.check_replaceable(ANALYSIS_KIND, overwrite=True, flag="a new --out")  # refuses foreign
    data = inputs.load(url, so, list(sets) if sets else None)  # bad input fails before anything is deleted
    if replace:
        loc.clear_owned(ANALYSIS_KIND)  # derived data: a rerun replaces what an analysis wrote
    loc.claim(ANALYSIS_KIND, ENTRIES)
    idx = [list(data.param_names).index(p) for p in names]
    full = inputs.full_set_name(data.sets)
    pft = inputs.pft_set_name(data.sets)
    fs = data.sets[full]
    xm = fs.mean[:, idx]
    groups = {g: v for g, v in GROUPS.items() if all(n in fs.predictors for n in v)}
    if "PFT" not in groups:
        raise DifferlandError(f"set {full}: the variance partition needs the PFT predictors in the full set")
    summary: dict[str, Any] = {"experiment": url, "full_set": full, "pft_set": pft,
                               "sets": list(data.sets), "parameters": names,
                               "members": {s: len(m.members) for s, m in data.sets.items()},
                               "n_pixels": int(xm.shape[0]), "seconds": {}}
    figs: dict[str, bytes] = {}

    # uncertainty first: every later section marks untrusted parameters with it
    un = unc.spread(fs.x[:, :, idx], names)
    summary["uncertainty"] = _jsonable({k: v for k, v in un.items() if k != "ratio_map"})
    idf = None
    if data.true_x is not None:
        lo, hi = all_bounds()
        frac = tr.truth_range_fraction(to_bounded(data.true_x, lo, hi))
        idf = tr.recovery(fs.x[:, :, idx], data.true_x[:, idx], data.split, names, frac[idx])
        summary["identifiability"] = _jsonable(idf)
        summary["untrusted"] = [n for n in names if not idf["parameters"][n]["identifiable"]]
    else:
        summary["untrusted"] = list(un["not_pinned"])

    # 1. generalisation
    t = time.time()
    gen = gen_mod.compare(data.scores, data.member_scores, pft) if data.scores else None
    if gen is not None:
        gen["spatial"] = gen_mod.compare(data.scores, data.member_scores, pft, view="spatial")
    summary["generalisation"] = _jsonable(gen)
    summary["seconds"]["generalisation"] = time.time() - t

    # 2. variance partition
    t = time.time()
    ref = data.sets[pft].mean[:, idx] if pft and pft != full else None
    vp = variance_partition(xm, names, data.predictors, data.patch, groups=groups, reference=ref,
                            n_splits=n_splits, seed=seed, max_iter=partition_max_iter)
    summary["variance_partition"] = _jsonable(vp)
    vpt = None
    if data.true_x is not None:
        vpt = variance_partition(data.true_x[:, idx], names, data.predictors, data.patch, groups=groups,
                                 n_splits=n_splits, seed=seed, max_iter=partition_max_iter)
        summary["variance_partition_truth"] = _jsonable(vpt)
    summary["seconds"]["variance_partition"] = time.time() - t

    # 3. gradients
    t = time.time()
    preds = {n: data.predictors[n] for n in fs.predictors if n in data.predictors}
    gr = grad.gradients(xm, names, preds)
    summary["gradients"] = _jsonable(gr)
    cos = cos_all = None
    if data.true_x is not None:
        gt = grad.pca(data.true_x[:, idx])
        cos_all = grad.principal_cosines(gr["arrays"]["loadings"][:3], gt["loadings"][:3])
        summary["pca_cosines_all"] = [float(c) for c in cos_all]
        summary["gradients_truth"] = {"explained": [float(v) for v in gt["explained"]]}
        # the check compares the gradients of the parameters whose pattern is identifiable:
        # an unidentifiable map is noise on the learnt side, and its share of the variance
        # would decide the components (docs/analysis.md)
        ident_idx = [names.index(n) for n in idf["identifiable"]]
        if len(ident_idx) >= 3:
            ga, gb = grad.pca(xm[:, ident_idx]), grad.pca(data.true_x[:, idx][:, ident_idx])
            cos = grad.principal_cosines(ga["loadings"][:3], gb["loadings"][:3])
            summary["pca_cosines"] = [float(c) for c in cos]
            summary["gradients_truth"]["explained_identifiable"] = [float(v) for v in gb["explained"]]
            summary["gradients"]["explained_identifiable"] = [float(v) for v in ga["explained"]]
    summary["seconds"]["gradients"] = time.time() - t

    # 4. SHAP
    t = time.time()
    sopt = shap or shp.ShapOptions()
    feats = [*fs.predictors, "lat"]
    F = np.stack([data.predictors[n] for n in fs.predictors] + [data.lat.astype(np.float64)], axis=1)
    funcs = {}
    for key, d in zip(fs.members, fs.run_dirs):
        f, fnames = shp.NetworkFunction.from_run(d, so)
        funcs[key] = calendar.AlignedFunction(f, data.param_names, fs.date_centre)
        if fnames != feats:
            raise DifferlandError(f"member {key}: network features {fnames} differ from the set's {feats}")
    if data.truth is not None:
        funcs["truth"] = calendar.AlignedFunction(shp.TruthFunction(data.truth, feats), data.param_names,
                                                  data.truth_date_centre)
    ex = shp.explain(funcs, F, sopt)
    mabs = {k: shp.mean_abs(v[:, :, idx]) for k, v in ex["values"].items()}
    member_keys = list(fs.members)
    stack = np.stack([mabs[k] for k in member_keys])
    m_mean = stack.mean(axis=0)
    m_sd = stack.std(axis=0, ddof=1) if len(member_keys) > 1 else np.zeros_like(stack[0])
    top = {}
    for j, n in enumerate(names):
        order = np.argsort(-m_mean[:, j])[:5]
        top[n] = [[feats[i], float(m_mean[i, j]), float(m_sd[i, j])] for i in order]
    mean_vals = np.mean(np.stack([ex["values"][k][:, :, idx] for k in member_keys]), axis=0)
    pft_names = [n for n in groups["PFT"]]
    sample = F[ex["pixels"]]
    cond = {}
    for p, mask in shp.dominant_pft(sample[:, [feats.index(n) for n in pft_names]], pft_names,
                                    min_pixels=max(5, min(20, len(ex["pixels"]) // 10))).items():
        ma = np.mean(np.abs(mean_vals[mask]), axis=0).mean(axis=1)  # (F,) over parameters
        o = np.argsort(-ma)
        cond[p] = {"pixels": int(mask.sum()), "top": [[feats[i], float(ma[i])] for i in o[:5]],
                   "mean_abs_by_param": {n: {feats[i]: float(v) for i, v in enumerate(
                       np.mean(np.abs(mean_vals[mask][:, :, j]), axis=0))} for j, n in enumerate(names)}}
    dep_figs = {}
    dep_params = [n for n in names if n not in summary["untrusted"]][:3] or names[:3]
    for n in dep_params:
        j = names.index(n)
        tops = [feats.index(f) for f, _, _ in top[n][:3]]
        if figures:
            figs[f"shap_dependence_{n}.png"] = report.dependence_figure(
                {feats[i]: sample[:, i] for i in tops}, {feats[i]: mean_vals[:, i, j] for i in tops}, n)
        dep_figs[n] = f"shap_dependence_{n}.png"
    shap_summary: dict[str, Any] = {
        "members": len(member_keys), "pixels": int(len(ex["pixels"])), "background": int(len(ex["background"])),
        "nsamples": sopt.nsamples, "executor": sopt.executor, "features": feats, "top": top,
        "mean_abs": {n: {feats[i]: float(m_mean[i, j]) for i in range(len(feats))} for j, n in enumerate(names)},
        "mean_abs_sd": {n: {feats[i]: float(m_sd[i, j]) for i in range(len(feats))} for j, n in enumerate(names)},
        "pft_conditional": cond, "dependence_figures": dep_figs}
    rhos = pooled = None
    if "truth" in mabs:
        shap_summary["truth_mean_abs"] = {n: {feats[i]: float(mabs["truth"][i, j]) for i in range(len(feats))}
                                          for j, n in enumerate(names)}
        ident = idf["identifiable"] if idf else []
        rhos = tr.shap_rank(m_mean, mabs["truth"], names, ident)
        pooled = tr.shap_pooled_rank(m_mean, mabs["truth"], names, ident)
        shap_summary["spearman_vs_truth_pooled_identifiable"] = pooled
        shap_summary["spearman_vs_truth"] = tr.shap_rank(m_mean, mabs["truth"], names, names)
    shap_summary["seconds"] = time.time() - t
    summary["shap"] = _jsonable(shap_summary)
    summary["seconds"]["shap"] = shap_summary["seconds"]
    if shap_recipe == "paper":  # the reference's recipe, besides (analysis/shap_paper.py)
        t = time.time()
        summary["shap_paper"] = _jsonable(shap_paper.for_experiment(
            fs, data, feats, F, so, seed=sopt.seed, executor=sopt.executor, address=sopt.address,
            **(paper_shap or {})))
        summary["seconds"]["shap_paper"] = time.time() - t

    # intervals and findings (analysis/bootstrap.py, analysis/findings.py)
    t = time.time()
    summary["init"] = settings.head_init_scales(fs.run_dirs, so)
    trusted = [n for n in names if n not in summary["untrusted"]]
    eligible = [n for n in trusted if (vp["parameters"][n]["r2_all"] or -1) >= fnd.R2_ALL_MIN]
    bt = None
    if bootstrap > 0:
        bt = boot.bootstrap(fs.x[:, :, idx], names, data.predictors, data.patch, groups,
                            share_params=eligible, pca_params=trusted if len(trusted) >= 3 else [],
                            true_x=data.true_x[:, idx] if data.true_x is not None else None,
                            shap_values=np.stack([ex["values"][k][:, :, idx] for k in member_keys]),
                            shap_truth=ex["values"]["truth"][:, :, idx] if "truth" in ex["values"] else None,
                            shap_params=eligible, n=bootstrap, seed=seed,
                            max_iter=partition_max_iter, n_splits=n_splits)
        summary["intervals"] = _jsonable({k: v for k, v in bt.items()})
    summary["findings"] = _jsonable(fnd.decide(_jsonable(vp), trusted, bt, top, feats))
    if vpt is not None and eligible:
        summary["findings"]["headline"]["truth_median_pft_share"] = float(np.nanmedian(
            [vpt["parameters"][n]["pft_share"] for n in eligible]))
    summary["seconds"]["bootstrap"] = time.time() - t

    # truth checks
    if data.true_x is not None:
        ident = idf["identifiable"]
        crit = [tr.check_partition(vp, vpt, ident), tr.check_pca(cos if cos is not None else [], ident),
                tr.check_shap(pooled, rhos or {})]
        if gen is not None and pft:
            crit += tr.check_generalisation(gen, full, spatial=gen["spatial"])
        summary["truth_check"] = _jsonable({
            "criteria": crit, "identifiable": ident,
            "note": "criteria on parameters are evaluated over the identifiable ones (ensemble-mean "
                    f"correlation with the truth >= {tr.IDENTIFIABLE_R} on test pixels and over "
                    "the whole map); with none, "
                    "they fail"})

    # files
    def wj(name, obj):
        loc.join(name).write_atomic(json.dumps(_jsonable(obj), indent=1, allow_nan=False).encode())

    if gen is not None:
        wj("generalisation.json", gen)
    wj("variance_partition.json", {**vp, **({"truth": vpt} if vpt else {})})
    wj("gradients.json", {**{k: v for k, v in gr.items() if k != "arrays"},
                          **({"truth_cosines_all": summary["pca_cosines_all"],
                              "truth_cosines_identifiable": summary.get("pca_cosines"),
                              "truth_explained": summary["gradients_truth"]["explained"]}
                             if cos_all is not None else {})})
    wj("shap.json", shap_summary)
    if "shap_paper" in summary:
        wj("shap_paper.json", summary["shap_paper"])
    wj("uncertainty.json", {k: v for k, v in un.items() if k != "ratio_map"})
    if idf:
        wj("identifiability.json", idf)
    if "truth_check" in summary:
        wj("truth_check.json", summary["truth_check"])
    C = gr["arrays"]["loadings"].shape[0]
    pix = {"pixel_lat": ("pixel", data.lat), "pixel_lon": ("pixel", data.lon),
           "row": ("pixel", data.row), "col": ("pixel", data.col)}
    _write_zarr(join(out, "gradients.zarr"), oso, {
        "explained": ("component", gr["arrays"]["explained"].astype(np.float32)),
        "loadings": (("component", "param"), gr["arrays"]["loadings"].astype(np.float32)),
        "scores": (("pixel", "component"), gr["arrays"]["scores"].astype(np.float32))},
        {"component": np.arange(1, C + 1, dtype=np.int32), "param": np.array(names, dtype=object), **pix},
        {"predictor_set": full, "description": "PCA of the standardised ensemble-mean unbounded parameter maps"})
    vals = np.stack([ex["values"][k][:, :, idx] for k in member_keys]).astype(np.float32)
    sv = {"shap": (("member", "sample", "feature", "param"), vals),
          "sample_pixel": ("sample", ex["pixels"].astype(np.int32)),
          "features": (("sample", "feature"), sample.astype(np.float32))}
    if "truth" in ex["values"]:
        sv["shap_truth"] = (("sample", "feature", "param"), ex["values"]["truth"][:, :, idx].astype(np.float32))
    _write_zarr(join(out, "shap.zarr"), oso, sv,
                {"member": np.array(member_keys, dtype=object), "feature": np.array(feats, dtype=object),
                 "param": np.array(names, dtype=object)},
                {"explainer": "shap.KernelExplainer", "background": int(len(ex["background"])),
                 "nsamples": sopt.nsamples, "space": "unbounded network outputs"})
    _write_zarr(join(out, "uncertainty.zarr"), oso, {
        "spread_ratio": (("pixel", "param"), un["ratio_map"].astype(np.float32)),
        "ensemble_sd": (("pixel", "param"), fs.sd[:, idx].astype(np.float32)),
        "ensemble_mean": (("pixel", "param"), xm.astype(np.float32))},
        {"param": np.array(names, dtype=object), **pix},
        {"description": "member sd / spatial sd of the ensemble mean (unbounded space)"})
    if figures:
        if gen is not None:
            figs["generalisation.png"] = report.generalisation_figure([gen, gen["spatial"]])
        figs["variance_partition.png"] = report.partition_figure(vp, vpt)
        figs["pca_loadings.png"] = report.loadings_figure(gr["arrays"]["loadings"], names,
                                                          gr["arrays"]["explained"])
        sc = gr["arrays"]["scores"]
        figs["pca_scores.png"] = report.maps_figure(
            [report.to_grid(sc[:, c], data.row, data.col, data.grid_shape) for c in range(3)],
            [f"PC{c + 1} score ({100 * gr['arrays']['explained'][c]:.0f} %)" for c in range(3)])
        figs["shap_importance.png"] = report.shap_figure(m_mean, feats, names)
        worst = sorted(names, key=lambda n: -(un["parameters"][n]["ratio"]
                                               if math.isfinite(un["parameters"][n]["ratio"]) else -1))[:3]
        figs["uncertainty.png"] = report.maps_figure(
            [report.to_grid(un["ratio_map"][:, names.index(n)], data.row, data.col, data.grid_shape)
             for n in worst], [f"{n}: member sd / spatial sd" for n in worst], cmap="magma", symmetric=False)
        for k, b in figs.items():
            loc.join("figures", k).write_atomic(b)
    summary["seconds"]["total"] = time.time() - t0
    summary["files"] = sorted([e for e in ENTRIES if e not in ("figures", "report.md", "summary.json")
                               and loc.join(e).exists()] + [f"figures/{k}" for k in figs]
                              + ["report.md", "summary.json"])
    loc.join("report.md").write_atomic(report.markdown(_jsonable(summary)).encode())
    wj("summary.json", summary)
    log.info("analysis of %s written to %s in %.0f s", url, out, summary["seconds"]["total"])
    return _jsonable(summary)
