"""Bootstrap intervals, the rules that make numbers findings, and the controls of issue 25,
at the analysis level: on constructed maps over the 10-degree synthetic Earth's predictors
(the full pipeline is ~20 minutes per experiment on the 2-core VM; `differland analyze` end to
end runs in tests/test_experiment.py).

Controls: (a) a truth permuted over pixels (no relation to the predictors), even learnt
perfectly: no share, gradient or SHAP finding; (b) untrained networks as the learnt maps: the
truth checks fail (although the partition's r2_all filter keeps them); (c) a PFT-only truth
(configs/truths/pft_only.yaml) learnt with noise: estimated share >= 0.85, decided "PFT"."""

from __future__ import annotations

import numpy as np
import pytest

from differland_dist import synthetic as synth
from differland_dist.analysis import bootstrap as boot
from differland_dist.analysis import findings as fnd
from differland_dist.analysis.partition import GROUPS, variance_partition

NAMES = list(synth.PARAM_NAMES_ALL)
FAST = dict(n=6, max_iter=20, n_splits=3)


@pytest.fixture(scope="module")
def earth():
    g = synth.make_grid(10.0)
    pred = {k: np.asarray(v, np.float64) for k, v in synth.make_predictors(g.lat, g.lon, 0).items()}
    feats = np.stack([pred[k] for k in synth.TRUTH_FEATURES], axis=1)
    return {"grid": g, "pred": pred, "feats": feats}


def _z(v):
    return (v - v.mean()) / v.std()


def _members(x, rng, noise=0.2, m=3):
    sd = x.std(axis=0)
    return np.stack([x + noise * sd * rng.normal(size=x.shape) for _ in range(m)])


def test_intervals_decide_pft_environment_and_undecided(earth):
    p, patch = earth["pred"], earth["grid"].patch
    rng = np.random.default_rng(0)
    pft = _z(2 * p["EBF"] - 1.5 * p["GRA"] + p["NF"])
    soil = _z(np.tanh((p["SAND"] - 40) / 15))
    half = pft + soil  # independent halves: share ~0.5
    maps = np.stack([pft, soil, half], axis=1)
    names = ["pft_driven", "soil_driven", "half"]
    members = _members(maps, rng, 0.05)
    vp = variance_partition(members.mean(0), names, p, patch, max_iter=20, n_splits=3)
    bt = boot.bootstrap(members, names, p, patch, GROUPS, share_params=names, pca_params=names, **FAST)
    a, b = list(boot.resamples(3, patch, 2, 0)), list(boot.resamples(3, patch, 2, 0))
    assert all(np.array_equal(u, v) for ra, rb in zip(a, b) for u, v in zip(ra, rb))  # seeded
    assert not np.array_equal(a[0][1], a[1][1])
    assert len(bt["pft_share"]["half"]["values"]) == 6
    lo, hi = bt["pft_share"]["half"]["interval"]
    assert lo < 0.5 < hi
    f = fnd.decide(vp, names, bt)
    dec = {n: v["decision"] for n, v in f["shares"].items()}
    assert dec == {"pft_driven": "PFT", "soil_driven": "environment", "half": "undecided"}, bt["pft_share"]
    assert not any(s.startswith("half") for s in f["significant"])
    # untrusted parameters get no decision and leave the headline
    f2 = fnd.decide(vp, ["soil_driven", "half"], bt)
    assert f2["shares"]["pft_driven"]["decision"] is None and f2["headline"]["over"] == ["soil_driven", "half"]
    # its interval: the resamples' medians over exactly these parameters
    per_b = np.median(np.array([bt["pft_share"][n]["values"] for n in ["soil_driven", "half"]]), axis=0)
    assert f2["headline"]["interval"] == pytest.approx(boot.interval(per_b))
    assert fnd.share_decision([0.3, 0.6]) == "undecided" and fnd.share_decision(None) == "undecided"


def test_generalisation_is_beyond_the_spread_only_when_the_test_says_so():
    from differland_dist.analysis.truth import check_generalisation

    r = {"beyond_spread": True, "better": True, "p_value": 0.256, "diff": 0.25, "spread": 0.1,
         "test": "paired t-test over 2 members"}
    assert fnd.generalisation_words(r).startswith("not distinguishable from the member spread (p = 0.256")
    assert fnd.generalisation_words({**r, "p_value": 0.003}).startswith("beyond the member spread (p = 0.003")
    assert not fnd.generalisation_significant({**r, "p_value": None})
    gen = {"reference": "PFT", "streams": {"sif": {"FULL": r}, "lai": {"FULL": {**r, "p_value": 0.01}}}}
    c = {x["name"].split(" on test ")[1].split()[0]: x for x in check_generalisation(gen, "FULL")}
    assert not c["sif"]["passed"] and c["lai"]["passed"]


def test_control_a_permuted_truth_gives_no_finding(earth):
    """The structured truth permuted over pixels keeps its values and the parameters'
    correlations but loses any relation to the predictors. Even members that learnt it
    exactly, all trusted, yield no share, gradient or SHAP finding."""
    rng = np.random.default_rng(1)
    t = synth.make_truth(0, "structured")
    x = synth.apply_truth(t, earth["feats"], earth["grid"].lat)
    pick = ["leaf_lifespan", "LCMA", "canopy_efficiency", "field_capacity", "init_wood", "f_gpp"]
    idx = [NAMES.index(n) for n in pick]
    perm = x[rng.permutation(x.shape[0])][:, idx]
    members = _members(perm, rng, 0.05)
    p, patch = earth["pred"], earth["grid"].patch
    vp = variance_partition(members.mean(0), pick, p, patch, max_iter=20, n_splits=3)
    # SHAP values in which one predictor dominates every parameter: a ranking exists, but it is
    # not a finding for maps the predictors do not explain
    sv = rng.normal(0, 0.01, size=(3, 20, 21, len(pick)))
    sv[:, :, 0] += 5.0
    bt = boot.bootstrap(members, pick, p, patch, GROUPS, share_params=pick, pca_params=pick,
                        shap_values=sv, shap_params=pick, **FAST)
    f = fnd.decide(vp, pick, bt, shap_features=[f"f{i}" for i in range(21)])
    assert f["significant"] == [], f["significant"]
    assert all(v["decision"] is None for v in f["shares"].values())  # none explainable
    assert not any(g["environmental"] for g in f["gradients"])
    assert f["headline"]["decision"] == "no trusted parameter"


def test_control_b_untrained_networks_fail_the_truth_checks(earth):
    """Untrained networks (the paper's initialisation) as the learnt maps: their maps are smooth
    functions of the predictors, so r2_all keeps them (the filter removes almost nothing), but
    no map is identifiable against the structured truth and every parameter criterion fails."""
    import jax

    from differland_dist.analysis import truth as tr
    from differland_dist.analysis.shap_values import NetworkFunction
    from differland_dist.network.mlp import init_network, network_to_arrays
    from differland_dist.network.standardize import Standardizer, hemisphere_feature

    g, feats = earth["grid"], earth["feats"]
    lat = np.asarray(g.lat, np.float64)
    raw = np.concatenate([hemisphere_feature(lat)[:, None], feats], axis=1)
    std = Standardizer.fit(["hemisphere", *synth.TRUTH_FEATURES], raw)
    maps = []
    for s in range(3):
        f = NetworkFunction(network_to_arrays(init_network(jax.random.PRNGKey(100 + s), 20)),
                            "leaky_relu", std.mean, std.std)
        maps.append(f(np.concatenate([feats, lat[:, None]], axis=1)))
    members = np.stack(maps)
    truth = synth.apply_truth(synth.make_truth(0, "structured"), feats, g.lat)
    split = np.where(np.arange(truth.shape[0]) % 4 == 0, 2, 0)
    rec = tr.recovery(members, truth, split, NAMES)
    ident = rec["identifiable"]
    assert len(ident) <= 1, ident
    pick = ["leaf_lifespan", "LCMA", "field_capacity", "init_wood"]
    idx = [NAMES.index(n) for n in pick]
    vp = variance_partition(members.mean(0)[:, idx], pick, earth["pred"], g.patch, max_iter=20, n_splits=3)
    assert min(v["r2_all"] for v in vp["parameters"].values()) > 0.2  # the r2 filter keeps them
    vpt = variance_partition(truth[:, idx], pick, earth["pred"], g.patch, max_iter=20, n_splits=3)
    ident_pick = [n for n in ident if n in pick]
    crit = [tr.check_partition(vp, vpt, ident_pick), tr.check_pca([], ident), tr.check_shap(None, {})]
    assert not any(c["passed"] for c in crit)
    # trusted = identifiable: the findings have no headline
    assert fnd.decide(vp, ident_pick, None)["headline"]["decision"] in ("no trusted parameter", "undecided")


def test_control_c_pft_only_truth_is_estimated_as_pft(earth):
    design = synth.load_design("pft_only")
    x = synth.apply_truth(synth.build_truth(design, 0), earth["feats"], earth["grid"].lat)
    names = list(design.parameters)[::2]  # seven of them: a fast test
    idx = [NAMES.index(n) for n in names]
    rng = np.random.default_rng(2)
    members = _members(x[:, idx], rng, 0.2)
    p, patch = earth["pred"], earth["grid"].patch
    vp = variance_partition(members.mean(0), names, p, patch, max_iter=20, n_splits=3)
    bt = boot.bootstrap(members, names, p, patch, GROUPS, share_params=names, pca_params=names, **FAST)
    f = fnd.decide(vp, names, bt)
    h = f["headline"]
    assert h["median_pft_share"] >= 0.85, h
    assert h["decision"] == "PFT" and h["interval"][0] > 0.5, (h, {n: v["values"] for n, v in bt["pft_share"].items()}, bt["median_pft_share"])
