"""The paper's SHAP recipe (analysis/shap_paper.py): the ensemble's physical and derived
targets, the reference's pixel draws, and each of the three reference defects, reproduced on
demand and fixed by default."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from differland_dist.analysis import shap_paper as SP
from differland_dist.analysis.shap_values import NetworkFunction
from differland_dist.vocabulary.parameters import PARAM_NAMES
from differland_dist.network.mlp import NetworkConfig, init_network, network_to_arrays

NAMES = list(PARAM_NAMES)
F_PRED = 3   # predictors; the features are these and lat


def _member(seed: int) -> NetworkFunction:
    net = init_network(jax.random.PRNGKey(seed), F_PRED, NetworkConfig(hidden_layers=2, width=8))
    rng = np.random.default_rng(seed)
    return NetworkFunction(network_to_arrays(net), "leaky_relu", rng.normal(0, 0.1, F_PRED + 1),
                           1 + rng.random(F_PRED + 1))


def _features(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random((n, F_PRED)), rng.uniform(-60, 70, (n, 1))], axis=1)


def test_targets_are_physical_with_the_derived_allocations():
    X = _features(20)
    f = _member(1)
    t, names = SP.targets(f(X), NAMES)
    ix = {n: i for i, n in enumerate(names)}
    assert names[-6:] == list(SP.DERIVED) and t.shape == (20, 46)
    alloc = ["auto_resp_ratio", "leaf_allocation", "labile_allocation", "root_allocation", "wood_allocation"]
    np.testing.assert_allclose(t[:, [ix[a] for a in alloc]].sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(t[:, ix["Q10_cal"]], np.exp(10 * t[:, ix["Q10"]]))
    assert np.all((t[:, ix["Bday"]] >= 0) & (t[:, ix["Bday"]] < 365.25))
    # the flab defect (labile allocation from f_fol) moves the labile, root and wood shares only
    d, _ = SP.targets(f(X), NAMES, flab_defect=True)
    moved = [j for j in range(46) if not np.allclose(d[:, j], t[:, j])]
    assert moved == [ix["labile_allocation"], ix["root_allocation"], ix["wood_allocation"]]
    fol = t[:, ix["f_fol"]]
    np.testing.assert_allclose(d[:, ix["labile_allocation"]],
                               (1 - t[:, ix["f_gpp"]] - t[:, ix["leaf_allocation"]]) * fol)


def test_ensemble_mean_and_the_raw_lat_defect():
    X = _features(15)
    m = [_member(1), _member(2)]
    ens = SP.EnsembleTargets(m, NAMES)
    want = np.mean([SP.targets(f(X), NAMES)[0] for f in m], axis=0)
    np.testing.assert_allclose(ens(X), want)
    raw = SP.network_outputs(m[0], X, raw_lat=True)
    ok = m[0](X)
    changed = [j for j in range(40) if not np.allclose(raw[:, j], ok[:, j])]
    assert changed == [NAMES.index("Bday"), NAMES.index("Fday")]


def test_pft_mask_defect_selects_by_grid_position_the_fix_by_cover():
    # 6 pixels on a 4 x 5 grid; the sorted train/dev vector is pixels in run-index order
    cell = np.array([3, 7, 8, 12, 15, 19])
    frac = np.array([0.9, 0.1, 0.95, 0.2, 0.85, 0.0])
    shuffle = np.array([2, 0, 5, 1, 4, 3])
    fixed = SP.pft_rows(frac[shuffle])
    assert fixed.tolist() == [0, 1, 4]        # pixels 2, 0, 4: the covered ones
    # the reference: full-grid mask (cells 3, 8, 15 covered) read at cells 2, 0, 5, 1, 4, 3
    assert SP.reference_pft_rows(frac, cell, shuffle).tolist() == [5]   # cell 3 -> pixel 3 (20 %)


def test_recipe_draws_train_dev_pixels_and_pft_pixels_only():
    P = 60
    X = _features(P, 3)
    split = np.repeat([0, 1, 2], 20)
    frac = np.zeros(P)
    frac[[1, 4, 9, 22, 25, 41, 45, 50]] = 0.9
    out = SP.run_recipe([_member(1), _member(2)], NAMES, X, ["a", "b", "c", "lat"], split,
                        {"ENF": frac}, pixels=8, background=4, nsamples=30, min_pft_pixels=3)
    u = out["unconditional"]
    assert u["pixels"] == 8 and u["background"] == 4 and set(u["top"]) == set(NAMES + list(SP.DERIVED))
    assert out["pft_conditional"]["ENF"]["share_of_pft"] == 1.0
    assert out["defects"] == {"pft_mask": False, "flab": False, "raw_lat": False}
    px, bg = SP.draw(np.flatnonzero(split != 2), 0, 8, 4)
    assert np.all(split[px] != 2) and set(bg) <= set(px)
    # the kernel SHAP values of the ensemble sum to f(x) - E f(background) (local accuracy)
    res = SP.explain([_member(1)], NAMES, X, np.arange(40), pixels=3, background=4, nsamples=200)
    f = SP.EnsembleTargets([_member(1)], NAMES)
    gap = f(X[res["pixels"]]) - f(X[res["background"]]).mean(axis=0)
    np.testing.assert_allclose(res["values"].sum(axis=1), gap, rtol=1e-3, atol=1e-3 * np.abs(gap).max())
