"""Figures (PNG bytes) and ``report.md`` of an analysis: each finding in one sentence with its
number, followed by its figure."""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import numpy as np

from differland_dist.analysis import findings


def _plt():
    # imported here: matplotlib is heavy and only the figures need it; the backend is set
    # before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def to_grid(values: np.ndarray, row: np.ndarray, col: np.ndarray, shape: tuple[int, int] | None) -> np.ndarray:
    """(P,) pixel values -> (rows, cols) map, NaN off land (the bounding box without a grid)."""
    if shape is None:
        shape = (int(row.max()) + 1, int(col.max()) + 1)
    out = np.full(shape, np.nan)
    out[row, col] = values
    return out


def partition_figure(vp: Mapping, truth: Mapping | None = None) -> bytes:
    plt = _plt()
    names = list(vp["parameters"])
    y = np.arange(len(names))
    fig, ax = plt.subplots(1, 2, figsize=(10, 0.22 * len(names) + 1.5), dpi=100, sharey=True)
    r2a = [vp["parameters"][n]["r2_all"] for n in names]
    r2p = [vp["parameters"][n]["r2_PFT"] for n in names]
    ax[0].barh(y - 0.2, r2a, 0.4, label="all predictors", color="#6baed6")
    ax[0].barh(y + 0.2, r2p, 0.4, label="PFT only", color="#fd8d3c")
    ax[0].set_xlabel("cross-validated R²"), ax[0].legend(fontsize=7)
    share = [vp["parameters"][n]["pft_share"] for n in names]
    ax[1].barh(y, share, 0.5, color="#74c476", label="learnt")
    if truth is not None:
        ts = [truth["parameters"].get(n, {}).get("pft_share", np.nan) for n in names]
        ax[1].scatter(ts, y, color="k", s=12, zorder=3, label="truth")
    ax[1].axvline(0.5, color="0.6", lw=0.8)
    ax[1].set_xlabel("pft_share = r2_pft / r2_all"), ax[1].legend(fontsize=7)
    ax[0].set_yticks(y, names, fontsize=7)
    ax[0].invert_yaxis()
    return _png(fig)


def loadings_figure(loadings: np.ndarray, param_names: Sequence[str], explained: np.ndarray, n: int = 5) -> bytes:
    plt = _plt()
    n = min(n, loadings.shape[0])
    fig, ax = plt.subplots(figsize=(0.25 * len(param_names) + 2, 0.4 * n + 1.6), dpi=100)
    v = float(np.max(np.abs(loadings[:n]))) or 1.0
    im = ax.imshow(loadings[:n], cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto")
    ax.set_xticks(range(len(param_names)), param_names, rotation=90, fontsize=6)
    ax.set_yticks(range(n), [f"PC{i + 1} ({100 * explained[i]:.0f} %)" for i in range(n)], fontsize=7)
    fig.colorbar(im, ax=ax, label="loading")
    return _png(fig)


def maps_figure(maps: Sequence[np.ndarray], titles: Sequence[str], cmap: str = "RdBu_r",
                symmetric: bool = True) -> bytes:
    plt = _plt()
    fig, axes = plt.subplots(len(maps), 1, figsize=(6, 2.6 * len(maps)), dpi=100, squeeze=False)
    for a, m, t in zip(axes[:, 0], maps, titles):
        v = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0
        im = a.imshow(m, cmap=cmap, vmin=-v if symmetric else None, vmax=v if symmetric else None,
                      aspect="auto")
        a.set_title(t, fontsize=8), a.set_xticks([]), a.set_yticks([])
        fig.colorbar(im, ax=a, shrink=0.8)
    return _png(fig)


def shap_figure(mean_abs: np.ndarray, features: Sequence[str], param_names: Sequence[str]) -> bytes:
    """Heat map of mean |SHAP| (F, K), each parameter's column normalised to sum 1."""
    plt = _plt()
    col = mean_abs / np.where(mean_abs.sum(axis=0) > 0, mean_abs.sum(axis=0), 1.0)
    fig, ax = plt.subplots(figsize=(0.25 * len(param_names) + 2.5, 0.25 * len(features) + 1.8), dpi=100)
    im = ax.imshow(col, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(param_names)), param_names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(features)), features, fontsize=7)
    fig.colorbar(im, ax=ax, label="share of mean |SHAP|")
    return _png(fig)


def dependence_figure(x: Mapping[str, np.ndarray], shap_vals: Mapping[str, np.ndarray], param: str) -> bytes:
    plt = _plt()
    names = list(x)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), dpi=100, squeeze=False)
    for a, n in zip(axes[0], names):
        a.scatter(x[n], shap_vals[n], s=6, alpha=0.7)
        a.set_xlabel(n, fontsize=8), a.set_ylabel(f"SHAP on {param}", fontsize=7)
        a.axhline(0, color="0.6", lw=0.6)
    return _png(fig)


def generalisation_figure(gens: Sequence[Mapping]) -> bytes:
    """One panel per view (:func:`generalisation.compare` results)."""
    plt = _plt()
    streams = list(gens[0]["streams"])
    sets = sorted({s for g in gens for st in streams for s in g["streams"].get(st, {})})
    fig, axes = plt.subplots(len(gens), 1, figsize=(max(5, 0.9 * len(streams) * len(sets) / 2 + 2),
                                                     3.0 * len(gens)), dpi=100, squeeze=False)
    w = 0.8 / max(1, len(sets))
    for ax, gen in zip(axes[:, 0], gens):
        for i, s in enumerate(sets):
            xs = np.arange(len(streams)) + i * w
            mm = [gen["streams"].get(st, {}).get(s, {}).get("member_mean") for st in streams]
            sd = [gen["streams"].get(st, {}).get(s, {}).get("member_sd") or 0.0 for st in streams]
            ax.bar(xs, [np.nan if v is None else v for v in mm], w, yerr=sd, capsize=2, label=s)
        ax.set_xticks(np.arange(len(streams)) + 0.4 - w / 2, streams, rotation=30, fontsize=7)
        ax.set_ylabel(f"{gen['split']} {gen['metric'].upper()}, {gen.get('view', 'flat')}\n"
                      "(member mean ± sd)", fontsize=8)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _f(x, d: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def _marker(s: Mapping):
    """A parameter's name, marked † when it is not trusted (see the report's introduction)."""
    untrusted = set(s["untrusted"])

    def mark(n):
        return f"{n}†" if n in untrusted else n

    return mark


def _intro(s: Mapping) -> list[str]:
    """The title, what was analysed, the members' initialisation and the intervals."""
    L = [f"# Analysis of experiment `{s['experiment']}`", "",
         f"Full set **{s['full_set']}** ({s['members'][s['full_set']]} kept members)"
         + (f", compared with **{s['pft_set']}**" if s.get("pft_set") else "") + f"; {s['n_pixels']} "
         "land pixels; parameters in the network's unbounded space. "
         + ("Parameters marked † are not identifiable (correlation with the truth on test pixels "
            f"or over the whole map < {s['identifiability']['threshold_r']}): statements about "
            "them are not trusted."
            if s.get("identifiability") else "Parameters marked † are not pinned down by the "
            "ensemble (member spread ≥ half the spatial spread): read them beside their spread."), ""]
    init = (s.get("init") or {}).get("head_init_scale") or []
    if init:
        vals = sorted({v for v in init if v is not None})
        L += [f"Members initialised with network.head_init_scale = "
              f"{', '.join(f'{v:g}' for v in vals) or 'unknown'} (1 = the paper's initialisation; "
              "the initialisation changes the learnt maps' PFT shares, in both directions: "
              "docs/analysis.md).", ""]
    ints = s.get("intervals")
    if ints:
        L += [f"Intervals: {100 * ints['level']:.0f} % bootstrap over {ints['n']} resamples of the "
              f"kept members and the patches (seed {ints['seed']}; analysis/bootstrap.py).", ""]
    else:
        L += ["No bootstrap intervals were computed (--bootstrap 0): no share is reported as a "
              "finding.", ""]
    return L


def _generalisation(s: Mapping) -> list[str]:
    """Test skill of each set against the PFT-only set, flat and spatial."""
    L: list[str] = []
    g = s.get("generalisation")
    if g:
        L += ["## Generalisation", "",
              "Test NSE of every pixel-month (flat), and in brackets of the pixels' time means "
              "(spatial: how well unseen places are told apart).", ""]
        sp = g.get("spatial") or {"streams": {}}
        for st, rows in g["streams"].items():
            for name, r in rows.items():
                if r.get("diff") is None:
                    continue
                ref = rows[g["reference"]]
                line = (f"- {st}: {name} test NSE {_f(r['member_mean'])} ± {_f(r['member_sd'])} vs "
                        f"{g['reference']} {_f(ref['member_mean'])} ± {_f(ref['member_sd'])}: difference "
                        f"{_f(r['diff'])}, {findings.generalisation_words(r)}")
                q = sp["streams"].get(st, {}).get(name)
                qr = sp["streams"].get(st, {}).get(g["reference"])
                if q and qr and q.get("diff") is not None:
                    line += (f" (spatial {_f(q['member_mean'])} ± {_f(q['member_sd'])} vs "
                             f"{_f(qr['member_mean'])} ± {_f(qr['member_sd'])}: difference {_f(q['diff'])}, "
                             f"{findings.generalisation_words(q)})")
                L.append(line + ".")
        L += ["", "![generalisation](figures/generalisation.png)", ""]
    return L


def _partition(s: Mapping) -> list[str]:
    """The PFT-versus-environment headline and the variance-partition table."""
    fd = s.get("findings") or {}
    mark = _marker(s)
    vp = s["variance_partition"]
    hl = fd.get("headline") or {}
    L = ["## PFTs versus environment", ""]
    if hl.get("over"):
        iv = hl.get("interval") or [None, None]
        verdict = {"PFT": "mostly PFTs", "environment": "mostly the environment"}.get(
            hl.get("decision"), "undecided (the interval spans ½ or is missing)")
        L.append(f"Over the {len(hl['over'])} trusted parameters whose maps the predictors explain "
                 f"(r2_all ≥ {vp['recipe']['explainable_r2_all_min']}), PFTs account for a median "
                 f"{_f(hl.get('median_pft_share'))} [{_f(iv[0])}, {_f(iv[1])}] of the explainable "
                 f"spatial variation: {verdict}"
                 + (f" (truth, same parameters: {_f(hl.get('truth_median_pft_share'))})"
                    if hl.get("truth_median_pft_share") is not None else "") + ".")
    else:
        L.append("No trusted parameter has a map the predictors explain: no PFT-share headline.")
    L += ["", f"Over all {vp['summary']['n_explainable']} explainable parameters, trusted or not, the "
          f"median is {_f(vp['summary']['median_pft_share'])}"
          + (f" (truth: {_f(s['variance_partition_truth']['summary']['median_pft_share'])})"
             if s.get("variance_partition_truth") else "") + "; not a finding. "
          "PFT fractions and climate each predict much of the same variation (compare r2_PFT and "
          "r2_CLIM): the share measures how much of it PFTs *can* account for, collinearity "
          "included, not a causal attribution.", "",
          "*direct share* = 1 − Var(full − PFT-only) / Var(full), both maps on the full map's "
          "standardised scale: 1 when the PFT-only ensemble's map equals the full set's, 0 when it "
          "is no closer than a uniform map; it is negative when the PFT-only map differs from the "
          "full one by more than the full map varies (a PFT-only map of larger amplitude), shown "
          "as < 0. *decision*: PFT / environment when the share's whole interval is above / below "
          "½, undecided when it spans ½; untrusted or unexplained parameters get none.", "",
          "| parameter | r2_all | r2_PFT | r2_CLIM | r2_SOIL | r2_AGE | pft_share | interval | decision | "
          "direct share | spread ratio |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    shares = fd.get("shares") or {}
    for n, v in vp["parameters"].items():
        d = v.get("direct_share")
        ds_ = "< 0" if d is not None and isinstance(d, float) and math.isfinite(d) and d < 0 else _f(d)
        sh = shares.get(n, {})
        iv = sh.get("interval") or [None, None]
        L.append(f"| {mark(n)} | {_f(v['r2_all'])} | {_f(v['r2_PFT'])} | {_f(v['r2_CLIM'])} | "
                 f"{_f(v['r2_SOIL'])} | {_f(v['r2_AGE'])} | {_f(v['pft_share'])} | "
                 f"{'[' + _f(iv[0]) + ', ' + _f(iv[1]) + ']' if iv[0] is not None else '–'} | "
                 f"{sh.get('decision') or '–'} | {ds_} | {_f(s['uncertainty']['parameters'][n]['ratio'])} |")
    L += ["", "![variance partition](figures/variance_partition.png)", ""]
    return L


def _gradients(s: Mapping) -> list[str]:
    """The principal components, their cosines with the truth and their intervals."""
    fd = s.get("findings") or {}
    ints = s.get("intervals")
    mark = _marker(s)
    gr = s["gradients"]
    L = ["## Parameter gradients", ""]
    for c, v in gr["components"].items():
        tops = ", ".join(f"{k} ({_f(r)})" for k, r in v["top_predictors"])
        pars = ", ".join(f"{mark(k)} ({_f(w)})" for k, w in v["top_parameters"][:4])
        L.append(f"- {c} explains {100 * v['explained']:.0f} % of the variance; it follows {tops}; "
                 f"it moves {pars}.")
    if s.get("pca_cosines") is not None:
        L.append(f"- Over the identifiable parameters, the first three components span the "
                 f"truth's subspace with principal-angle cosines "
                 f"{', '.join(_f(c) for c in s['pca_cosines'])}.")
    if s.get("pca_cosines_all") is not None:
        L.append(f"- Over all parameters shown (unidentifiable maps included) the cosines are "
                 f"{', '.join(_f(c) for c in s['pca_cosines_all'])}.")
    pi = (ints or {}).get("pca")
    if pi:
        L.append(f"- Over the {len(pi['over'])} trusted parameters: explained variance of the first "
                 "three components " + ", ".join(f"[{_f(a)}, {_f(b)}]" for a, b in pi["explained"])
                 + (("; cosines with the truth's " + ", ".join(f"[{_f(a)}, {_f(b)}]" for a, b in pi["cosines"]))
                    if pi.get("cosines") else "") + ".")
    for gd in fd.get("gradients") or []:
        iv = gd["score_r2_all"] or [None, None]
        L.append(f"- {gd['component']} of the trusted parameters: its scores are predicted out of fold "
                 f"with R² [{_f(iv[0])}, {_f(iv[1])}]: "
                 + ("an environmental gradient." if gd["environmental"] else
                    "not shown to be an environmental gradient (its predictor correlations above "
                    "are not a finding)."))
    L += ["", "![loadings](figures/pca_loadings.png)", "", "![scores](figures/pca_scores.png)", ""]
    return L


def _shap(s: Mapping) -> list[str]:
    """The leading predictors of each parameter (SHAP), within PFTs and their intervals."""
    fd = s.get("findings") or {}
    ints = s.get("intervals")
    mark = _marker(s)
    L: list[str] = []
    sh = s.get("shap")
    if sh:
        L += ["## What drives each parameter (SHAP)", "",
              f"Kernel SHAP over {sh['members']} member(s), {sh['pixels']} pixels, background "
              f"{sh['background']}, {sh['nsamples']} coalitions per pixel ({_f(sh['seconds'], 0)} s)."]
        for n, v in sh["top"].items():
            L.append(f"- {mark(n)}: " + ", ".join(f"{k} {_f(m, 3)} ± {_f(sd, 3)}" for k, m, sd in v))
        if sh.get("pft_conditional"):
            L.append("- Within PFTs (dominant PFT ≥ 80 %): " + "; ".join(
                f"{p} ({d['pixels']} px): " + ", ".join(k for k, _ in d["top"][:3])
                for p, d in sh["pft_conditional"].items()))
        for n, v in (fd.get("shap") or {}).items():
            L.append(f"- {n}: {v['first']} ranks first in {100 * (v['first_frequency'] or 0):.0f} % of "
                     "the resamples: " + ("its leading predictor." if v["decided"] else
                                          "undecided (below 95 %)."))
        si = ((ints or {}).get("shap") or {})
        if si.get("pooled_rho"):
            L.append(f"- Pooled Spearman ρ against the truth's profile: interval "
                     f"[{_f(si['pooled_rho'][0])}, {_f(si['pooled_rho'][1])}].")
        L += ["", "![shap](figures/shap_importance.png)", ""]
        L += [f"![dependence {p}](figures/{f})" for p, f in sh["dependence_figures"].items()] + [""]
    return L


def _uncertainty(s: Mapping) -> list[str]:
    """The parameters the ensemble does not pin down."""
    u = s["uncertainty"]
    L = ["## Uncertainty", "",
          f"With {u['members']} member(s), {len(u['not_pinned'])} of {len(u['parameters'])} "
          f"parameters are not pinned down by the ensemble (median member sd ≥ "
          f"{u['threshold']} × spatial sd): {', '.join(u['not_pinned']) or 'none'}.", "",
          "![uncertainty](figures/uncertainty.png)", ""]
    return L


def _identifiability(s: Mapping) -> list[str]:
    """Recovery of the synthetic truth per parameter."""
    L: list[str] = []
    idf = s.get("identifiability")
    if idf:
        L += ["## Identifiability (synthetic truth)", "",
              f"Against the true parameters on {idf['n_pixels']} {idf['pixels']} pixels, the "
              f"median R² is {_f(idf['median_r2'])}; spatial pattern identifiable (r ≥ "
              f"{idf['threshold_r']} there and over the whole map): "
              f"{', '.join(idf['identifiable']) or 'none'}; values recovered "
              f"(also R² ≥ {idf['threshold_r2']}): {', '.join(idf['values_recovered']) or 'none'}.", "",
              "| parameter | R² | r | r, whole map | bias | truth sd | ensemble sd | truth spread / range |",
              "|---|---|---|---|---|---|---|---|"]
        for n, v in idf["parameters"].items():
            L.append(f"| {n} | {_f(v['r2'])} | {_f(v['r'])} | {_f(v.get('r_all'))} | {_f(v['bias'])} | {_f(v['truth_sd'])} | "
                     f"{_f(v['ensemble_sd'])} | {_f(v.get('truth_range_fraction'), 3)} |")
        L.append("")
    return L


def _findings(s: Mapping) -> list[str]:
    """What the numbers support, by the rules of analysis/findings.py."""
    fd = s.get("findings") or {}
    L: list[str] = []
    if fd:
        L += ["## Findings", "",
              "What the numbers above support, by the rules of analysis/findings.py (a share whose "
              "interval spans ½ is undecided; a gradient is environmental only if the predictors "
              "predict its scores out of fold; a leading SHAP predictor only if it ranks first in "
              "≥ 95 % of the resamples; only trusted parameters):", ""]
        L += [f"- {x}" for x in fd.get("significant") or []] or ["- none"]
        L.append("")
    return L


def _truth_check(s: Mapping) -> list[str]:
    """The criteria against the truth."""
    L: list[str] = []
    tc = s.get("truth_check")
    if tc:
        L += ["## Checks against the truth", "", "| criterion | value | threshold | passed |",
              "|---|---|---|---|"]
        for c in tc["criteria"]:
            name = c["name"].replace("|", "\\|")  # a bar inside a table cell ends the cell
            L.append(f"| {name} | {_f(c['value'], 3) if isinstance(c['value'], float) else c['value']} "
                     f"| {c['threshold']} | {'yes' if c['passed'] else '**no**'} |")
        L.append("")
    return L


SECTIONS = (_intro, _generalisation, _partition, _gradients, _shap, _uncertainty, _identifiability,
            _findings, _truth_check)


def markdown(summary: Mapping) -> str:
    """The report from the analysis summary (see pipeline.run_analysis), section by section."""
    return "\n".join(line for section in SECTIONS for line in section(summary))
