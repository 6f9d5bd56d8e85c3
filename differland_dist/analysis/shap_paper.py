"""The paper's SHAP recipe (``compute_shap.py`` of JianingFang/DifferLand_Global), with its three
defects fixed (and each one available to measure what it changes).

The recipe, against the project's default (``--shap-recipe members``,
:mod:`~differland_dist.analysis.shap_values`):

* one function: the **ensemble average** over the kept members of each target, in
  **physical** parameter space (bounded values; ``Bday``/``Fday`` modulo 365.25 days), not each
  member separately in unbounded space;
* **derived targets** besides the 40 parameters: the allocation fractions (autotrophic
  respiration, leaf, labile, root, wood) and the calibrated Q10 = exp(10 x ``Q10``);
* explained pixels: 1,000 drawn with replacement from the **train and dev** pixels (the
  reference reads run 61's index and drops its negative, test, cells); background: 100 of
  those, without replacement; the features are the network's predictors and ``lat``;
* **PFT-conditional** SHAP: pixels and background both drawn from the pixels whose fraction
  of that PFT exceeds the threshold (80 %).

The defects (``Defects``; all fixed by default):

* ``pft_mask``: the reference indexes the full-grid PFT mask with ``shuffle_idx``, an index
  into the filtered, sorted pixel vector (compute_shap.py lines 290-292), so its "PFT" pixels
  are the sorted pixels at whose *position* the full grid (row-major from the first cell) has
  the PFT: unrelated to the pixels' own cover;
* ``flab``: the labile allocation uses ``f_fol`` for ``flab`` (line 181);
* ``raw_lat``: the phenology head receives the raw latitude (degrees) instead of the
  standardised hemisphere input the network was trained with (lines 168 and 237).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from differland_dist.analysis.shap_values import NetworkFunction, kernel_shap
from differland_dist.vocabulary.parameters import all_bounds, to_bounded

log = logging.getLogger(__name__)

#: ``differland analyze --shap-recipe``: the project's (each member, unbounded; the default)
#: or also the paper's (this module).
RECIPES = ("members", "paper")
#: The reference's sample sizes (compute_shap.py lines 295-296 and 322).
PIXELS = 1000
BACKGROUND = 100
#: PFT purity threshold of the conditional version (compute_shap.py ``-x``, percent -> fraction).
PFT_THRESHOLD = 0.8
#: Targets computed from the parameters (compute_shap.py lines 179-200).
DERIVED = ("auto_resp_ratio", "leaf_allocation", "labile_allocation", "root_allocation",
           "wood_allocation", "Q10_cal")
YEAR = 365.25


@dataclass(frozen=True)
class Defects:
    """Which of the reference's defects to reproduce (False: fixed)."""

    pft_mask: bool = False
    flab: bool = False
    raw_lat: bool = False


def network_outputs(f: NetworkFunction, X: np.ndarray, raw_lat: bool = False) -> np.ndarray:
    """(n, 40) unbounded outputs of a member at raw features X = [predictors..., lat]; with
    ``raw_lat`` the phenology head gets the latitude in degrees instead of its trained input."""
    out = f(X)
    if not raw_lat:
        return out
    X = np.asarray(X, np.float64)
    hemi = 1.0 / (1.0 + np.exp(-X[:, -1:]))
    z = (np.concatenate([hemi, X[:, :-1]], axis=1) - f.mean) / f.std
    a = f.arrays
    h = z[:, 1:]
    i = 0
    act = (lambda x: np.where(x >= 0, x, 0.01 * x)) if f.activation == "leaky_relu" else None
    if act is None:
        raise ValueError(f"raw_lat emulation supports leaky_relu networks, got {f.activation!r}")
    while f"net_embed_{i}_weights" in a:
        h = act(h @ a[f"net_embed_{i}_weights"] + a[f"net_embed_{i}_biases"])
        i += 1
    ph = np.concatenate([h, X[:, -1:]], axis=1) @ a["net_pheno_head_0_weights"] + a["net_pheno_head_0_biases"]
    out = out.copy()
    out[:, 31:33] = ph
    return out


def targets(unbounded: np.ndarray, names: Sequence[str], flab_defect: bool = False) -> tuple[np.ndarray, list[str]]:
    """((n, 40 + 6) physical targets, their names): the 40 parameters in physical units
    (dates modulo a year, as the reference) and the derived ones of :data:`DERIVED`."""
    lo, hi = all_bounds()
    x = np.clip(np.asarray(unbounded, np.float64), -1e6, 1e6)
    phys = to_bounded(x, lo, hi)
    ix = {n: j for j, n in enumerate(names)}
    for d in ("Bday", "Fday"):
        phys[:, ix[d]] = phys[:, ix[d]] % YEAR
    f_gpp, f_fol, f_root = phys[:, ix["f_gpp"]], phys[:, ix["f_fol"]], phys[:, ix["f_root"]]
    flab = phys[:, ix["f_fol"]] if flab_defect else phys[:, ix["flab"]]
    leaf = (1 - f_gpp) * f_fol
    lab = (1 - f_gpp - leaf) * flab
    root = (1 - f_gpp - leaf - lab) * f_root
    wood = 1 - f_gpp - leaf - lab - root
    q10 = np.exp(10 * phys[:, ix["Q10"]])
    extra = np.stack([f_gpp, leaf, lab, root, wood, q10], axis=1)
    return np.concatenate([phys, extra], axis=1), [*names, *DERIVED]


class EnsembleTargets:
    """The reference's explained function: raw features (n, F) -> (n, K) ensemble mean of the
    members' physical targets (:func:`targets`)."""

    def __init__(self, members: Sequence[NetworkFunction], names: Sequence[str],
                 defects: Defects = Defects()):
        self.members = list(members)
        self.names = list(names)
        self.defects = defects

    def __call__(self, X: np.ndarray) -> np.ndarray:
        outs = [targets(network_outputs(f, X, self.defects.raw_lat), self.names, self.defects.flab)[0]
                for f in self.members]
        return np.mean(outs, axis=0)

    @property
    def target_names(self) -> list[str]:
        return [*self.names, *DERIVED]


def reference_pft_rows(pft_fraction: np.ndarray, flat_cell: np.ndarray, shuffle: np.ndarray,
                       threshold: float = PFT_THRESHOLD) -> np.ndarray:
    """Positions in the sorted train/dev pixel vector that ``compute_shap.py`` keeps for a
    PFT: the full-grid mask (cell c: the PFT fraction of the pixel at c > threshold, ocean
    False) indexed with ``shuffle_idx`` (= ``shuffle``), whose values are positions in the
    filtered pixel vector, not grid cells (the defect).

    pft_fraction, flat_cell: (P,) of every pixel (fraction, row-major grid cell);
    shuffle: (n,) the stable argsort of the train/dev pixels' run index."""
    full = np.zeros(max(int(np.max(flat_cell)) + 1, len(shuffle)), bool)
    full[np.asarray(flat_cell, np.int64)] = np.asarray(pft_fraction) > threshold
    return np.flatnonzero(full[np.asarray(shuffle, np.int64)])


def pft_rows(pft_fraction_sorted: np.ndarray, threshold: float = PFT_THRESHOLD) -> np.ndarray:
    """Positions in the sorted train/dev pixel vector whose own PFT fraction exceeds
    ``threshold`` (the fix)."""
    return np.flatnonzero(np.asarray(pft_fraction_sorted) > threshold)


def draw(rows: np.ndarray, seed: int, pixels: int = PIXELS, background: int = BACKGROUND) -> tuple[np.ndarray, np.ndarray]:
    """(explained, background) rows: ``pixels`` drawn with replacement from ``rows`` (as
    ``np.random.randint``), ``background`` of those without replacement (``shap.utils.sample``)."""
    rng = np.random.default_rng([seed, 0x5A9])
    px = np.asarray(rows)[rng.integers(0, len(rows), size=pixels)]
    bg = px[rng.choice(len(px), size=min(background, len(px)), replace=False)]
    return px, bg


def explain(members: Sequence[NetworkFunction], names: Sequence[str], features: np.ndarray,
            rows: np.ndarray, *, defects: Defects = Defects(), pixels: int = PIXELS,
            background: int = BACKGROUND, nsamples: int | str = "auto", seed: int = 0,
            executor: str = "local", address: str | None = None, chunk: int = 50) -> dict:
    """Kernel SHAP of the ensemble's physical targets at ``pixels`` of ``rows`` (train and dev
    pixels, or a PFT's) of ``features`` (P, F). Returns ``{"pixels", "background", "values":
    (n, F, K), "targets": names, "mean_abs": (F, K)}``."""
    px, bg = draw(rows, seed, pixels, background)
    f = EnsembleTargets(members, names, defects)
    ns = 2 * features.shape[1] + 2048 if nsamples == "auto" else int(nsamples)
    vals = _shap(f, features[bg], features[px], ns, seed, executor, address, chunk)
    return {"pixels": px, "background": bg, "values": vals, "targets": f.target_names,
            "mean_abs": np.mean(np.abs(vals), axis=0)}


def _shap(f, bg, X, nsamples: int, seed: int, executor: str, address: str | None,
          chunk: int) -> np.ndarray:
    """Kernel SHAP of ``f`` at the rows of X, in chunks of ``chunk`` rows (Ray tasks with
    ``executor="ray"``); the same values either way (each chunk reseeds the coalitions)."""
    parts = [slice(a, min(a + chunk, len(X))) for a in range(0, len(X), chunk)]
    if executor == "local":
        return np.concatenate([kernel_shap(f, bg, X[c], nsamples, seed) for c in parts])
    # imported here: Ray loads only when the recipe runs on Ray
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(kernel_shap)
        return np.concatenate(ray.get([task.remote(f, bg, X[c], nsamples, seed) for c in parts]))
    finally:
        if started:
            ray.shutdown()


def run_recipe(members: Sequence[NetworkFunction], names: Sequence[str], features: np.ndarray,
               feature_names: Sequence[str], split: np.ndarray, pft: Mapping[str, np.ndarray],
               flat_cell: np.ndarray | None = None, sort_order: np.ndarray | None = None, *,
               defects: Defects = Defects(), pixels: int = PIXELS, background: int = BACKGROUND,
               nsamples: int | str = "auto", seed: int = 0, executor: str = "local",
               address: str | None = None, min_pft_pixels: int = 10) -> dict:
    """The recipe of an experiment's kept members: the unconditional SHAP over train and dev
    pixels (split codes 0, 1) and, for each PFT with at least ``min_pft_pixels`` train/dev
    pixels above the threshold, the PFT-conditional one. ``pft``: name -> (P,) fractions;
    ``sort_order``: the reference's pixel order (default: the store's); ``flat_cell``: the
    row-major grid cell of each pixel (needed only to reproduce the ``pft_mask`` defect).
    Returns a JSON-ready dict."""
    nt = np.flatnonzero(np.asarray(split) != 2)       # the reference drops test (index < 0)
    shuffle = (np.arange(len(nt)) if sort_order is None
               else np.argsort(np.asarray(sort_order)[nt], kind="mergesort"))
    pixels_sorted = nt[shuffle]
    kw = dict(defects=defects, pixels=pixels, background=background, nsamples=nsamples, seed=seed,
              executor=executor, address=address)
    out = {"recipe": "paper (compute_shap.py; defects fixed unless listed)",
           "defects": {k: bool(getattr(defects, k)) for k in ("pft_mask", "flab", "raw_lat")},
           "space": "physical (ensemble mean of the kept members)",
           "unconditional": summary(explain(members, names, features, pixels_sorted, **kw), feature_names),
           "pft_conditional": {}}
    for p, frac in pft.items():
        frac = np.asarray(frac)
        if defects.pft_mask:
            if flat_cell is None:
                raise ValueError("the pft_mask defect needs each pixel's grid cell")
            r = reference_pft_rows(frac, flat_cell, shuffle)
        else:
            r = pft_rows(frac[pixels_sorted])
        if len(r) < min_pft_pixels:
            continue
        res = explain(members, names, features, pixels_sorted[r], **kw)
        out["pft_conditional"][p] = {**summary(res, feature_names),
                                     "share_of_pft": float(np.mean(frac[res["pixels"]] > PFT_THRESHOLD))}
    log.info("paper SHAP recipe: %d member(s), %d PFT-conditional", len(members), len(out["pft_conditional"]))
    return out


def ranking(mean_abs: np.ndarray, features: Sequence[str], target_names: Sequence[str]) -> dict[str, list[str]]:
    """target -> features by decreasing mean |SHAP|."""
    return {t: [features[i] for i in np.argsort(-mean_abs[:, k], kind="stable")]
            for k, t in enumerate(target_names)}


def rank_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per target (columns of (F, K) mean |SHAP|): Spearman rank correlation of the two
    feature rankings; the summary the twin benchmark reports for each defect."""
    from scipy.stats import spearmanr

    out = []
    for k in range(a.shape[1]):
        if np.ptp(a[:, k]) == 0 or np.ptp(b[:, k]) == 0:
            out.append(np.nan)
        else:
            out.append(float(spearmanr(a[:, k], b[:, k])[0]))
    return np.asarray(out)


def summary(res: Mapping, features: Sequence[str]) -> dict:
    """JSON-ready: top features and mean |SHAP| per target."""
    t = res["targets"]
    m = res["mean_abs"]
    return {"pixels": int(len(res["pixels"])), "background": int(len(res["background"])),
            "features": list(features),
            "top": {n: ranking(m, features, t)[n][:5] for n in t},
            "mean_abs": {n: {features[i]: float(m[i, k]) for i in range(len(features))}
                         for k, n in enumerate(t)}}


def for_experiment(fs, data, feature_names: Sequence[str], features: np.ndarray,
                   *, seed: int = 0, executor: str = "local",
                   address: str | None = None, pixels: int = PIXELS, background: int = BACKGROUND,
                   nsamples: int | str = "auto", defects: Defects = Defects()) -> dict:
    """:func:`run_recipe` on an analysed experiment: ``fs`` the full set's
    :class:`~differland_dist.analysis.inputs.SetMaps` (its kept members), ``data`` the
    :class:`~differland_dist.analysis.inputs.ExperimentData`, ``features`` (P, F) raw."""
    # imported here: the schema and output tables load the model (JAX); the SHAP tasks do not
    from differland_dist.data.schema import PREDICTOR_SETS
    from differland_dist.vocabulary.parameters import PARAM_NAMES

    members = [NetworkFunction.from_run(d)[0] for d in fs.run_dirs]
    flat_cell = (np.asarray(data.row, np.int64) * int(data.grid_shape[1]) + np.asarray(data.col, np.int64)
                 if data.grid_shape else None)
    pft = {n: np.asarray(data.predictors[n], np.float64) for n in PREDICTOR_SETS["PFT"]
           if n in data.predictors}
    res = run_recipe(members, list(PARAM_NAMES), features, feature_names, data.split, pft, flat_cell,
                     defects=defects, pixels=pixels, background=background, nsamples=nsamples,
                     seed=seed, executor=executor, address=address)
    return {"set": fs.name, "members": list(fs.members), **res}
