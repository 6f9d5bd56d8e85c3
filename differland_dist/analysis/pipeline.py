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

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from differland_dist.analysis import (
    bootstrap, findings, generalisation, gradients, inputs, report, settings, shap_paper, shap_values,
    truth, uncertainty)
from differland_dist.analysis.bootstrap import N_RESAMPLES
from differland_dist.analysis.inputs import ExperimentData, SetMaps
from differland_dist.analysis.outputs import (
    add_figures, jsonable, write_json, write_json_files, write_zarrs)
from differland_dist.analysis.partition import GROUPS, variance_partition
from differland_dist.errors import DifferlandError
from differland_dist.model import calendar
from differland_dist.storage.location import Location
from differland_dist.vocabulary.parameters import PARAM_NAMES, all_bounds, to_bounded

log = logging.getLogger(__name__)

ANALYSIS_KIND = "experiment-analysis"
ENTRIES = ["generalisation.json", "variance_partition.json", "gradients.json", "gradients.zarr",
           "shap.json", "shap.zarr", "uncertainty.json", "uncertainty.zarr", "identifiability.json",
           "truth_check.json", "summary.json", "report.md", "figures", "shap_paper.json"]


@dataclass(frozen=True)
class AnalysisSettings:
    """How the analyses run (see :func:`run_analysis`)."""

    shap: shap_values.ShapOptions = field(default_factory=shap_values.ShapOptions)
    partition_max_iter: int = 100
    n_splits: int = 5
    seed: int = 0
    figures: bool = True
    shap_recipe: str = "members"
    paper_shap: dict | None = None
    bootstrap: int = N_RESAMPLES


@dataclass
class Analysis:
    """The state carried from one step of :func:`run_analysis` to the next: what was read,
    the parameters analysed (``names``, their columns ``idx``), the full and PFT-only sets,
    each step's result as it is made, the summary (``summary.json``, filled in step order) and
    the figures (name -> PNG)."""

    data: ExperimentData
    settings: AnalysisSettings
    names: list[str]
    idx: list[int]
    full: str
    pft: str | None
    groups: dict
    summary: dict
    figs: dict = field(default_factory=dict)
    un: dict | None = None             # ensemble spread (uncertainty.spread)
    idf: dict | None = None            # recovery of the truth (truth.recovery)
    gen: dict | None = None            # generalisation by set
    vp: dict | None = None             # variance partition, learnt maps
    vpt: dict | None = None            # variance partition, truth
    gr: dict | None = None             # gradients (PCA)
    cos: Any = None                    # principal cosines with the truth, identifiable parameters
    cos_all: Any = None                # the same, all parameters
    feats: list[str] = field(default_factory=list)
    F: np.ndarray | None = None        # (P, F) raw features [predictors..., lat]
    ex: dict | None = None             # shap_values.explain's result
    m_mean: np.ndarray | None = None   # (F, K) mean |SHAP| over members
    top: dict = field(default_factory=dict)
    shap_summary: dict = field(default_factory=dict)
    rhos: Any = None
    pooled: Any = None
    bt: dict | None = None             # bootstrap intervals

    @property
    def fs(self) -> SetMaps:
        return self.data.sets[self.full]

    @property
    def xm(self) -> np.ndarray:
        """(P, K) ensemble-mean maps of the full set."""
        return self.fs.mean[:, self.idx]

    @property
    def shap_options(self) -> shap_values.ShapOptions:
        return self.settings.shap


def check_request(params: Sequence[str] | None, shap_recipe: str) -> list[str]:
    """The parameters to analyse (default: all 40); DifferlandError for a bad request."""
    names = list(params) if params else list(PARAM_NAMES)
    bad = [p for p in names if p not in PARAM_NAMES]
    if bad:
        raise DifferlandError(f"--params {bad}: unknown parameter(s); known: {', '.join(PARAM_NAMES)}")
    if shap_recipe not in shap_paper.RECIPES:
        raise DifferlandError(f"--shap-recipe: {shap_recipe!r}, expected one of {list(shap_paper.RECIPES)}")
    if len(names) < 3:
        raise DifferlandError(f"--params: at least 3 parameters are needed (PCA of 3 components), "
                              f"got {names}")
    return names


def start(experiment: Location, out: Location, sets: Sequence[str] | None, names: list[str],
          st: AnalysisSettings) -> Analysis:
    """Read the experiment (bad input fails before anything is deleted), take the output
    directory (replacing only what an analysis wrote there) and begin the summary."""
    replace = out.check_replaceable(ANALYSIS_KIND, overwrite=True, flag="a new --out")  # refuses foreign
    data = inputs.load(experiment, list(sets) if sets else None)
    if replace:
        out.clear_owned(ANALYSIS_KIND)  # derived data: a rerun replaces what an analysis wrote
    out.claim(ANALYSIS_KIND, ENTRIES)
    full = inputs.full_set_name(data.sets)
    fs = data.sets[full]
    groups = {g: v for g, v in GROUPS.items() if all(n in fs.predictors for n in v)}
    if "PFT" not in groups:
        raise DifferlandError(f"set {full}: the variance partition needs the PFT predictors in the full set")
    pft = inputs.pft_set_name(data.sets)
    summary: dict[str, Any] = {"experiment": experiment.url, "full_set": full, "pft_set": pft,
                               "sets": list(data.sets), "parameters": names,
                               "members": {s: len(m.members) for s, m in data.sets.items()},
                               "n_pixels": int(fs.mean.shape[0]), "seconds": {}}
    return Analysis(data, st, names, [list(data.param_names).index(p) for p in names], full, pft,
                    groups, summary)


def step_uncertainty(a: Analysis) -> None:
    """Ensemble spread, and with a truth the recovery; which parameters are untrusted (every
    later section marks them)."""
    data, names, s = a.data, a.names, a.summary
    a.un = uncertainty.spread(a.fs.x[:, :, a.idx], names)
    s["uncertainty"] = jsonable({k: v for k, v in a.un.items() if k != "ratio_map"})
    if data.true_x is not None:
        lo, hi = all_bounds()
        frac = truth.truth_range_fraction(to_bounded(data.true_x, lo, hi))
        a.idf = truth.recovery(a.fs.x[:, :, a.idx], data.true_x[:, a.idx], data.split, names,
                               frac[a.idx])
        s["identifiability"] = jsonable(a.idf)
        s["untrusted"] = [n for n in names if not a.idf["parameters"][n]["identifiable"]]
    else:
        s["untrusted"] = list(a.un["not_pinned"])


def step_generalisation(a: Analysis) -> None:
    """Test skill of each set against the PFT-only set, flat and spatial."""
    t = time.time()
    data = a.data
    a.gen = generalisation.compare(data.scores, data.member_scores, a.pft) if data.scores else None
    if a.gen is not None:
        a.gen["spatial"] = generalisation.compare(data.scores, data.member_scores, a.pft,
                                                  view="spatial")
    a.summary["generalisation"] = jsonable(a.gen)
    a.summary["seconds"]["generalisation"] = time.time() - t


def step_partition(a: Analysis) -> None:
    """Variance partition of the learnt maps (and of the truth's)."""
    t = time.time()
    data, st = a.data, a.settings
    kw = {"n_splits": st.n_splits, "seed": st.seed, "max_iter": st.partition_max_iter}
    ref = data.sets[a.pft].mean[:, a.idx] if a.pft and a.pft != a.full else None
    a.vp = variance_partition(a.xm, a.names, data.predictors, data.patch, groups=a.groups,
                              reference=ref, **kw)
    a.summary["variance_partition"] = jsonable(a.vp)
    if data.true_x is not None:
        a.vpt = variance_partition(data.true_x[:, a.idx], a.names, data.predictors, data.patch,
                                   groups=a.groups, **kw)
        a.summary["variance_partition_truth"] = jsonable(a.vpt)
    a.summary["seconds"]["variance_partition"] = time.time() - t


def step_gradients(a: Analysis) -> None:
    """PCA of the ensemble-mean maps, and with a truth the principal cosines with its PCA."""
    t = time.time()
    data, names, s, xm = a.data, a.names, a.summary, a.xm
    preds = {n: data.predictors[n] for n in a.fs.predictors if n in data.predictors}
    a.gr = gradients.gradients(xm, names, preds)
    s["gradients"] = jsonable(a.gr)
    if data.true_x is not None:
        gt = gradients.pca(data.true_x[:, a.idx])
        a.cos_all = gradients.principal_cosines(a.gr["arrays"]["loadings"][:3], gt["loadings"][:3])
        s["pca_cosines_all"] = [float(c) for c in a.cos_all]
        s["gradients_truth"] = {"explained": [float(v) for v in gt["explained"]]}
        # the check compares the gradients of the parameters whose pattern is identifiable:
        # an unidentifiable map is noise on the learnt side, and its share of the variance
        # would decide the components (docs/analysis.md)
        ident_idx = [names.index(n) for n in a.idf["identifiable"]]
        if len(ident_idx) >= 3:
            ga, gb = gradients.pca(xm[:, ident_idx]), gradients.pca(data.true_x[:, a.idx][:, ident_idx])
            a.cos = gradients.principal_cosines(ga["loadings"][:3], gb["loadings"][:3])
            s["pca_cosines"] = [float(c) for c in a.cos]
            s["gradients_truth"]["explained_identifiable"] = [float(v) for v in gb["explained"]]
            s["gradients"]["explained_identifiable"] = [float(v) for v in ga["explained"]]
    s["seconds"]["gradients"] = time.time() - t


def explain(a: Analysis) -> None:
    """Kernel SHAP of every kept member of the full set (and the truth) on the raw features."""
    data, fs = a.data, a.fs
    a.feats = [*fs.predictors, "lat"]
    a.F = np.stack([data.predictors[n] for n in fs.predictors] + [data.lat.astype(np.float64)], axis=1)
    funcs = {}
    for key, d in zip(fs.members, fs.run_dirs):
        f, fnames = shap_values.NetworkFunction.from_run(d)
        funcs[key] = calendar.AlignedFunction(f, data.param_names, fs.date_centre)
        if fnames != a.feats:
            raise DifferlandError(f"member {key}: network features {fnames} differ from the set's {a.feats}")
    if data.truth is not None:
        funcs["truth"] = calendar.AlignedFunction(shap_values.TruthFunction(data.truth, a.feats),
                                                  data.param_names, data.truth_date_centre)
    a.ex = shap_values.explain(funcs, a.F, a.shap_options)


def _pft_conditional(a: Analysis, mean_vals: np.ndarray) -> dict:
    """Leading features within pixels dominated by one PFT, from the members' mean SHAP values
    ``mean_vals`` (pixels, F, K)."""
    feats, names, ex = a.feats, a.names, a.ex
    pft_names = list(a.groups["PFT"])
    sample = a.F[ex["pixels"]]
    cond = {}
    for p, mask in shap_values.dominant_pft(sample[:, [feats.index(n) for n in pft_names]], pft_names,
                                            min_pixels=max(5, min(20, len(ex["pixels"]) // 10))).items():
        ma = np.mean(np.abs(mean_vals[mask]), axis=0).mean(axis=1)  # (F,) over parameters
        o = np.argsort(-ma)
        cond[p] = {"pixels": int(mask.sum()), "top": [[feats[i], float(ma[i])] for i in o[:5]],
                   "mean_abs_by_param": {n: {feats[i]: float(v) for i, v in enumerate(
                       np.mean(np.abs(mean_vals[mask][:, :, j]), axis=0))} for j, n in enumerate(names)}}
    return cond


def _dependence(a: Analysis, mean_vals: np.ndarray) -> dict[str, str]:
    """Dependence figures (into ``a.figs``) of the leading features of up to three trusted
    parameters; parameter -> figure name."""
    feats, names = a.feats, a.names
    sample = a.F[a.ex["pixels"]]
    dep_figs = {}
    dep_params = [n for n in names if n not in a.summary["untrusted"]][:3] or names[:3]
    for n in dep_params:
        j = names.index(n)
        tops = [feats.index(f) for f, _, _ in a.top[n][:3]]
        if a.settings.figures:
            a.figs[f"shap_dependence_{n}.png"] = report.dependence_figure(
                {feats[i]: sample[:, i] for i in tops}, {feats[i]: mean_vals[:, i, j] for i in tops}, n)
        dep_figs[n] = f"shap_dependence_{n}.png"
    return dep_figs


def step_shap(a: Analysis) -> None:
    """SHAP: mean |SHAP| per feature and parameter over members (and the truth's), the
    leading features, within PFTs, dependence figures, rank agreement with the truth."""
    t = time.time()
    explain(a)
    names, feats, ex, sopt = a.names, a.feats, a.ex, a.shap_options
    mabs = {k: shap_values.mean_abs(v[:, :, a.idx]) for k, v in ex["values"].items()}
    member_keys = list(a.fs.members)
    stack = np.stack([mabs[k] for k in member_keys])
    a.m_mean = m_mean = stack.mean(axis=0)
    m_sd = stack.std(axis=0, ddof=1) if len(member_keys) > 1 else np.zeros_like(stack[0])
    for j, n in enumerate(names):
        order = np.argsort(-m_mean[:, j])[:5]
        a.top[n] = [[feats[i], float(m_mean[i, j]), float(m_sd[i, j])] for i in order]
    mean_vals = np.mean(np.stack([ex["values"][k][:, :, a.idx] for k in member_keys]), axis=0)
    cond = _pft_conditional(a, mean_vals)
    dep_figs = _dependence(a, mean_vals)
    sh: dict[str, Any] = {
        "members": len(member_keys), "pixels": int(len(ex["pixels"])), "background": int(len(ex["background"])),
        "nsamples": sopt.nsamples, "executor": sopt.executor, "features": feats, "top": a.top,
        "mean_abs": {n: {feats[i]: float(m_mean[i, j]) for i in range(len(feats))} for j, n in enumerate(names)},
        "mean_abs_sd": {n: {feats[i]: float(m_sd[i, j]) for i in range(len(feats))} for j, n in enumerate(names)},
        "pft_conditional": cond, "dependence_figures": dep_figs}
    if "truth" in mabs:
        sh["truth_mean_abs"] = {n: {feats[i]: float(mabs["truth"][i, j]) for i in range(len(feats))}
                                for j, n in enumerate(names)}
        ident = a.idf["identifiable"] if a.idf else []
        a.rhos = truth.shap_rank(m_mean, mabs["truth"], names, ident)
        a.pooled = truth.shap_pooled_rank(m_mean, mabs["truth"], names, ident)
        sh["spearman_vs_truth_pooled_identifiable"] = a.pooled
        sh["spearman_vs_truth"] = truth.shap_rank(m_mean, mabs["truth"], names, names)
    sh["seconds"] = time.time() - t
    a.shap_summary = sh
    a.summary["shap"] = jsonable(sh)
    a.summary["seconds"]["shap"] = sh["seconds"]


def step_shap_paper(a: Analysis) -> None:
    """The paper's SHAP recipe, besides (analysis/shap_paper.py; ``--shap-recipe paper``)."""
    if a.settings.shap_recipe != "paper":
        return
    t = time.time()
    sopt = a.shap_options
    a.summary["shap_paper"] = jsonable(shap_paper.for_experiment(
        a.fs, a.data, a.feats, a.F, seed=sopt.seed, executor=sopt.executor, address=sopt.address,
        **(a.settings.paper_shap or {})))
    a.summary["seconds"]["shap_paper"] = time.time() - t


def step_intervals(a: Analysis) -> None:
    """The members' initialisation, bootstrap intervals (analysis/bootstrap.py) and which
    results are findings (analysis/findings.py)."""
    t = time.time()
    s, names, data, st, ex = a.summary, a.names, a.data, a.settings, a.ex
    s["init"] = settings.head_init_scales(a.fs.run_dirs)
    trusted = [n for n in names if n not in s["untrusted"]]
    eligible = [n for n in trusted if (a.vp["parameters"][n]["r2_all"] or -1) >= findings.R2_ALL_MIN]
    if st.bootstrap > 0:
        a.bt = bootstrap.bootstrap(
            a.fs.x[:, :, a.idx], names, data.predictors, data.patch, a.groups,
            share_params=eligible, pca_params=trusted if len(trusted) >= 3 else [],
            true_x=data.true_x[:, a.idx] if data.true_x is not None else None,
            shap_values=np.stack([ex["values"][k][:, :, a.idx] for k in a.fs.members]),
            shap_truth=ex["values"]["truth"][:, :, a.idx] if "truth" in ex["values"] else None,
            shap_params=eligible, n=st.bootstrap, seed=st.seed,
            max_iter=st.partition_max_iter, n_splits=st.n_splits)
        s["intervals"] = jsonable({k: v for k, v in a.bt.items()})
    s["findings"] = jsonable(findings.decide(jsonable(a.vp), trusted, a.bt, a.top, a.feats))
    if a.vpt is not None and eligible:
        s["findings"]["headline"]["truth_median_pft_share"] = float(np.nanmedian(
            [a.vpt["parameters"][n]["pft_share"] for n in eligible]))
    s["seconds"]["bootstrap"] = time.time() - t


def step_truth_checks(a: Analysis) -> None:
    """The criteria against the truth (synthetic stores)."""
    if a.data.true_x is None:
        return
    ident = a.idf["identifiable"]
    crit = [truth.check_partition(a.vp, a.vpt, ident),
            truth.check_pca(a.cos if a.cos is not None else [], ident),
            truth.check_shap(a.pooled, a.rhos or {})]
    if a.gen is not None and a.pft:
        crit += truth.check_generalisation(a.gen, a.full, spatial=a.gen["spatial"])
    a.summary["truth_check"] = jsonable({
        "criteria": crit, "identifiable": ident,
        "note": "criteria on parameters are evaluated over the identifiable ones (ensemble-mean "
                f"correlation with the truth >= {truth.IDENTIFIABLE_R} on test pixels and over "
                "the whole map); with none, "
                "they fail"})


def write_all(a: Analysis, out: Location, t0: float) -> None:
    """Every file: the JSON files, the zarr stores, the figures, report.md and summary.json."""
    write_json_files(out, a)
    write_zarrs(out, a)
    if a.settings.figures:
        add_figures(a)
        for k, b in a.figs.items():
            out.join("figures", k).write_atomic(b)
    s = a.summary
    s["seconds"]["total"] = time.time() - t0
    s["files"] = sorted([e for e in ENTRIES if e not in ("figures", "report.md", "summary.json")
                         and out.join(e).exists()] + [f"figures/{k}" for k in a.figs]
                        + ["report.md", "summary.json"])
    out.join("report.md").write_atomic(report.markdown(jsonable(s)).encode())
    write_json(out.join("summary.json"), s)


#: The analyses in the order they run: uncertainty first (every later section marks
#: untrusted parameters with it), SHAP before the intervals (they resample its values).
STEPS = (step_uncertainty, step_generalisation, step_partition, step_gradients, step_shap,
         step_shap_paper, step_intervals, step_truth_checks)


def run_analysis(experiment: Location | str, out: Location | str | None = None, *,
                 sets: Sequence[str] | None = None, params: Sequence[str] | None = None,
                 shap: shap_values.ShapOptions | None = None,
                 partition_max_iter: int = 100, n_splits: int = 5, seed: int = 0,
                 figures: bool = True, shap_recipe: str = "members",
                 paper_shap: dict | None = None, bootstrap: int = N_RESAMPLES) -> dict:
    """Run every analysis on the experiment directory and write them to ``out``.

    Args:
      experiment: the experiment directory (a URL string: without storage options).
      out: output directory (default: ``EXPERIMENT_DIR/analysis``; a URL string is reached
        with the experiment's options).
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
    experiment = experiment if isinstance(experiment, Location) else Location(experiment)
    out = (experiment.join("analysis") if out is None
           else out if isinstance(out, Location) else Location(out, experiment.options))
    names = check_request(params, shap_recipe)
    st = AnalysisSettings(shap or shap_values.ShapOptions(), partition_max_iter, n_splits, seed,
                          figures, shap_recipe, paper_shap, bootstrap)
    a = start(experiment, out, sets, names, st)
    for step in STEPS:
        step(a)
    write_all(a, out, t0)
    log.info("analysis of %s written to %s in %.0f s", experiment.url, out.url,
             a.summary["seconds"]["total"])
    return jsonable(a.summary)
