"""The analyses of differland_dist.analysis, each on inputs whose answer is known by
construction (the synthetic Earth's predictors and hidden relation), ``differland analyze``
end to end runs in tests/test_experiment.py, on the experiment grid built there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = "/tmp/differland-test-jax-cache"


@pytest.fixture(scope="module")
def earth():
    """Predictors and true unbounded parameters of the 10-degree synthetic Earth (no DALEC)."""
    from differland_dist import synthetic as synth

    g = synth.make_grid(10.0)
    pred = {k: np.asarray(v, np.float64) for k, v in synth.make_predictors(g.lat, g.lon, 0).items()}
    truth = synth.make_truth(0)
    feats = np.stack([pred[k] for k in synth.TRUTH_FEATURES], axis=1)
    return {"grid": g, "pred": pred, "truth": truth,
            "x": synth.apply_truth(truth, feats, g.lat), "names": list(synth.PARAM_NAMES_ALL)}


def test_variance_partition_recovers_constructed_drivers(earth):
    from differland_dist.analysis.partition import variance_partition

    p = earth["pred"]
    rng = np.random.default_rng(0)
    pft_driven = 2 * p["EBF"] - 1.5 * p["GRA"] + p["NF"] + 0.05 * rng.normal(size=p["EBF"].size)
    # soils are independent of vegetation in the synthetic Earth (PFTs follow climate: a
    # climate-driven map is largely predictable from PFTs, as on the real Earth)
    soil_driven = np.tanh((p["SAND"] - 40) / 15) + 0.05 * rng.normal(size=p["SAND"].size)
    maps = np.stack([pft_driven, soil_driven, earth["x"][:, earth["names"].index("field_capacity")]], axis=1)
    names = ["pft_driven", "soil_driven", "field_capacity"]
    vp = variance_partition(maps, names, p, earth["grid"].patch, reference=maps * [1, 0, 1],
                            max_iter=60)
    a, b, fc = (vp["parameters"][n] for n in names)
    assert a["r2_PFT"] > 0.6 and a["pft_share"] > 0.8 and a["r2_CLIM"] < a["r2_PFT"]
    assert b["r2_SOIL"] > 0.6 and b["pft_share"] < 0.3
    # the truth's field capacity is a smooth function of the predictors; soils drive it
    assert fc["r2_all"] > 0.5 and vp["summary"]["dominant_group"]["field_capacity"] == "SOIL"
    # direct comparison: identical reference -> 1, a constant reference (0 after centring) -> 0
    assert a["direct_share"] == pytest.approx(1.0) and b["direct_share"] < 0.01
    assert set(vp["summary"]["explainable"]) == set(names)
    assert vp["recipe"]["pixels"] == maps.shape[0]


def test_variance_partition_rejects_bad_input(earth):
    from differland_dist.analysis.partition import variance_partition
    from differland_dist.errors import DifferlandError

    with pytest.raises(DifferlandError, match=r"predictors \['MAT'\] are missing"):
        variance_partition(earth["x"][:, :2], ["a", "b"], {k: v for k, v in earth["pred"].items()
                                                           if k != "MAT"}, earth["grid"].patch)
    with pytest.raises(DifferlandError, match="do not agree"):
        variance_partition(earth["x"][:, :2], ["a"], earth["pred"], earth["grid"].patch)


def test_pca_finds_constructed_gradients_and_principal_angles(earth):
    from differland_dist.analysis.gradients import gradients, pca, principal_cosines

    p = earth["pred"]
    rng = np.random.default_rng(1)
    z1 = (p["MAT"] - p["MAT"].mean()) / p["MAT"].std()
    z2 = (p["SAND"] - p["SAND"].mean()) / p["SAND"].std()
    z2 = z2 - z1 * np.mean(z1 * z2)  # orthogonal to MAT
    w = rng.normal(size=(2, 12))
    maps = np.stack([z1, z2], axis=1) @ w + 0.02 * rng.normal(size=(z1.size, 12))
    g = gradients(maps, [f"p{i}" for i in range(12)], p)
    assert sum(g["explained"][:2]) > 0.98
    named = {c: v["top_predictors"][0][0] for c, v in g["components"].items()}
    assert {"MAT", "SAND"} & {named["PC1"], named["PC2"]}
    # the subspace of the first two components is the span of the constructed loadings
    res = pca(maps)
    wz = w / maps.std(axis=0)
    cos = principal_cosines(res["loadings"][:2], wz)
    assert cos.min() > 0.99
    assert principal_cosines(np.eye(4)[:2], np.eye(4)[2:]).max() < 1e-12
    # the truth's PCA is deterministic and its scores reproduce the standardised maps
    t = pca(earth["x"])
    assert np.allclose(t["scores"] @ t["loadings"], (earth["x"] - earth["x"].mean(0)) /
                       np.where(earth["x"].std(0) > 0, earth["x"].std(0), 1))


def test_kernel_shap_is_exact_for_a_linear_function_and_additive_on_the_truth(earth):
    from differland_dist.analysis import shap_values as sv
    from differland_dist.synthetic import TRUTH_FEATURES

    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 5))
    w = rng.normal(size=(5, 3))
    vals = sv.kernel_shap(lambda a: a @ w, X[:20], X[20:30], nsamples=200)
    # exact SHAP of a linear function with independent features: w_i (x_i - E[x_i])
    exact = (X[20:30] - X[:20].mean(0))[:, :, None] * w[None]
    assert np.allclose(vals, exact, atol=1e-4)
    feats = [*TRUTH_FEATURES, "lat"]
    F = np.stack([earth["pred"][k] for k in TRUTH_FEATURES] + [earth["grid"].lat.astype(float)], axis=1)
    f = sv.TruthFunction(earth["truth"], feats)
    assert np.allclose(f(F), earth["x"])
    r = sv.explain({"truth": f}, F, sv.ShapOptions(background=20, pixels=12, nsamples=128, executor="local"))
    v = r["values"]["truth"]
    base = f(F[r["background"]]).mean(0)
    assert np.allclose(v.sum(axis=1) + base, f(F[r["pixels"]]), atol=1e-4)  # additivity
    # a parameter driven by soils in the truth ranks a soil predictor first
    ma = sv.mean_abs(v)
    assert feats[int(np.argmax(ma[:, earth["names"].index("field_capacity")]))] in (
        "BULK_DEN", "SAND", "SILT", "CLAY", "GRAVEL")
    masks = sv.dominant_pft(F[:, :10], feats[:10], threshold=0.5, min_pixels=3)
    assert masks and all(m.sum() >= 3 for m in masks.values())


def test_network_function_matches_the_jax_network():
    import jax

    from differland_dist.analysis.shap_values import NetworkFunction
    from differland_dist.network.mlp import apply_network, init_network, network_to_arrays
    from differland_dist.network.standardize import Standardizer, hemisphere_feature

    net = init_network(jax.random.PRNGKey(3), 4)
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(30, 4)) * [1, 10, 100, 0.1]
    lat = rng.uniform(-60, 80, size=30)
    full = np.concatenate([hemisphere_feature(lat)[:, None], raw], axis=1)
    std = Standardizer.fit(["hemisphere", "a", "b", "c", "d"], full)
    want = np.concatenate([np.asarray(o) for o in apply_network(net, std.apply(full))], axis=1)
    f = NetworkFunction(network_to_arrays(net), "leaky_relu", std.mean, std.std)
    assert np.allclose(f(np.concatenate([raw, lat[:, None]], axis=1)), want, atol=1e-4)


def test_uncertainty_and_recovery_on_constructed_ensembles(earth):
    from differland_dist.analysis.truth import recovery
    from differland_dist.analysis.uncertainty import spread

    x = earth["x"][:, :4]
    rng = np.random.default_rng(4)
    sd = x.std(axis=0)
    members = np.stack([x + rng.normal(size=x.shape) * sd * [0.01, 0.01, 4.0, 4.0] for _ in range(4)])
    members[:, :, 1] = x[:, 1].mean()  # member maps without spatial variation
    names = ["a", "b", "c", "d"]
    u = spread(members, names)
    assert u["parameters"]["a"]["pinned"] and not u["parameters"]["c"]["pinned"]
    assert set(u["not_pinned"]) == {"b", "c", "d"}  # b: no spread and no spatial variation
    split = np.where(np.arange(x.shape[0]) % 5 == 0, 2, 0)  # 29 test pixels
    rec = recovery(members, x, split, names)
    assert rec["pixels"] == "test" and rec["n_pixels"] == int((split == 2).sum())
    assert rec["identifiable"] == ["a"] and rec["parameters"]["a"]["r2"] > 0.99
    assert rec["parameters"]["b"]["r2"] <= 1e-6 and not rec["parameters"]["b"]["identifiable"]
    # right on the test pixels, wrong over the rest of the map the analyses read: not trusted
    wrong = members.copy()
    wrong[:, split != 2, 0] = rng.permutation(x[split != 2, 0])
    rec = recovery(wrong, x, split, names)["parameters"]["a"]
    assert rec["r"] > 0.99 and rec["r_all"] < 0.5 and not rec["identifiable"]


def test_generalisation_paired_test():
    from scipy import stats

    from differland_dist.analysis.generalisation import compare

    def ev(v):
        return {"streams": {"lai": {"test": {"flat": {"nse": v}}}}}

    full = [0.80, 0.82, 0.84]
    pft = [0.60, 0.63, 0.61]
    scores = {s: {"lai": {"test": {"flat": {"nse": {"ensemble": float(np.mean(v)) + 0.01,
                                                     "member_mean": float(np.mean(v)),
                                                     "member_sd": float(np.std(v, ddof=1))}}}}}
              for s, v in (("PFT", pft), ("FULL", full))}
    members = {"FULL": {f"FULL/m00{i}": ev(v) for i, v in enumerate(full)},
               "PFT": {f"PFT/m00{i}": ev(v) for i, v in enumerate(pft)}}
    g = compare(scores, members, "PFT")
    r = g["streams"]["lai"]["FULL"]
    assert r["diff"] == pytest.approx(np.mean(full) - np.mean(pft))
    assert r["p_value"] == pytest.approx(stats.ttest_rel(full, pft).pvalue)
    assert r["better"] and r["beyond_spread"] and "paired" in r["test"]
    # the spatial view (the pixels' time means) is compared on its own numbers: here the
    # flat gain is within a spread that the spatial one clears; the check reads flat
    from differland_dist.analysis.truth import check_generalisation

    flat_full, sp_full, sp_pft = [0.60, 0.75, 0.52], [0.95, 0.96, 0.955], [0.93, 0.935, 0.94]

    def ev2(f, sp):
        return {"streams": {"lai": {"test": {"flat": {"nse": f}, "spatial": {"nse": sp}}}}}

    def cell(v):
        return {"nse": {"ensemble": float(np.mean(v)), "member_mean": float(np.mean(v)),
                        "member_sd": float(np.std(v, ddof=1))}}

    scores2 = {"FULL": {"lai": {"test": {"flat": cell(flat_full), "spatial": cell(sp_full)}}},
               "PFT": {"lai": {"test": {"flat": cell(pft), "spatial": cell(sp_pft)}}}}
    members2 = {"FULL": {f"FULL/m00{i}": ev2(a, b) for i, (a, b) in enumerate(zip(flat_full, sp_full))},
                "PFT": {f"PFT/m00{i}": ev2(a, b) for i, (a, b) in enumerate(zip(pft, sp_pft))}}
    flat = compare(scores2, members2, "PFT")
    sp = compare(scores2, members2, "PFT", view="spatial")
    assert sp["view"] == "spatial" and not flat["streams"]["lai"]["FULL"]["better"]
    assert sp["streams"]["lai"]["FULL"]["diff"] == pytest.approx(np.mean(sp_full) - np.mean(sp_pft))
    assert sp["streams"]["lai"]["FULL"]["better"]
    c = {x["name"].split(" on test ")[1].split()[0]: x for x in check_generalisation(flat, "FULL", spatial=sp)}
    assert not c["lai"]["passed"] and c["lai"]["spatial_passed"] and "(flat)" in c["lai"]["name"]
    assert not c["sif"]["passed"] and c["sif"]["value"] is None  # no sif scores: fails, says nothing
    # different seeds kept: Welch's test instead
    members["PFT"] = {f"PFT/m01{i}": ev(v) for i, v in enumerate(pft)}
    r = compare(scores, members, "PFT")["streams"]["lai"]["FULL"]
    assert "Welch" in r["test"]


def test_partition_and_gradients_of_the_truth_are_structured(earth):
    """The synthetic truth is neither PFT-only nor structureless: its parameters differ in
    which group drives them (documented in docs/analysis.md)."""
    from differland_dist.analysis.partition import variance_partition

    names = earth["names"]
    pick = ["f_gpp", "canopy_efficiency", "field_capacity", "init_root"]
    idx = [names.index(n) for n in pick]
    vp = variance_partition(earth["x"][:, idx], pick, earth["pred"], earth["grid"].patch, max_iter=60)
    dom = vp["summary"]["dominant_group"]
    assert dom["f_gpp"] == "PFT" and dom["canopy_efficiency"] == "CLIM" and dom["field_capacity"] == "SOIL"
    shares = [vp["parameters"][n]["pft_share"] for n in pick]
    assert min(shares) < 0.3 and max(shares) > 0.8


def test_unbounded_inverts_the_parameter_transform(earth):
    from differland_dist.analysis.inputs import X_CLIP, unbounded
    from differland_dist.vocabulary.parameters import all_bounds
    from differland_dist.vocabulary.parameters import to_bounded

    lo, hi = all_bounds()
    x = earth["x"]
    assert np.allclose(unbounded(to_bounded(x, lo, hi)), x, atol=1e-6)
    edge = unbounded(np.stack([lo, hi]))  # a parameter on its bound: clipped, not infinite
    assert np.all(np.abs(edge) <= X_CLIP) and np.all(edge[0] < -10) and np.all(edge[1] > 10)


def test_structured_truth_has_its_documented_drivers(earth):
    """The structured design (differland synth --truth structured): each listed parameter
    follows its named gradient with the documented spread, soil- and age-driven parameters are
    not PFT-driven, the unlisted ones barely vary, and it is a Truth like any other (stored,
    explained by SHAP through apply_truth)."""
    from differland_dist import synthetic as synth
    from differland_dist.analysis.partition import variance_partition
    from differland_dist.errors import DifferlandError
    from differland_dist.vocabulary.parameters import all_bounds, to_bounded

    t = synth.make_truth(0, "structured")
    feats = np.stack([earth["pred"][k] for k in synth.TRUTH_FEATURES], axis=1)
    x = synth.apply_truth(t, feats, earth["grid"].lat)
    lo, hi = all_bounds()
    north = earth["grid"].lat >= 0
    logp = np.log(to_bounded(x, lo, hi))[north]  # one hemisphere: phenology shifts by half a year
    names = earth["names"]
    for n, (_, log_sd) in synth.STRUCTURE.items():
        sd = logp[:, names.index(n)].std()
        assert 0.4 * log_sd < sd < 2.5 * log_sd, (n, sd, log_sd)
    minor = [logp[:, j].std() for j, n in enumerate(names) if n not in synth.STRUCTURE]
    assert max(minor) < 0.1
    pick = ["leaf_lifespan", "field_capacity", "init_wood", "Bday"]
    idx = [names.index(n) for n in pick]
    vp = variance_partition(x[:, idx], pick, earth["pred"], earth["grid"].patch, max_iter=60)
    dom = vp["summary"]["dominant_group"]
    assert dom["leaf_lifespan"] == "PFT" and dom["field_capacity"] == "SOIL" and dom["init_wood"] == "AGE"
    assert vp["parameters"]["field_capacity"]["pft_share"] < 0.4
    assert vp["parameters"]["leaf_lifespan"]["pft_share"] > 0.6
    # the random design is unchanged by the structured one's existence (stores stay the same)
    assert np.array_equal(synth.make_truth(0).w1, synth.make_truth(0, "random").w1)
    with pytest.raises(DifferlandError, match="truth design 'paper'"):
        synth.make_truth(0, "paper")


def test_shap_pooled_rank_weighs_parameters_equally():
    from differland_dist.analysis.truth import check_shap, importance_profile, shap_pooled_rank

    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    truth = rng.uniform(size=(8, 3))
    truth[:, 2] *= 1e4  # a parameter in large units must not decide the profile
    assert shap_pooled_rank(truth, truth, names, names) == pytest.approx(1.0)
    assert shap_pooled_rank(-truth + 1e5, truth, names, ["c"]) == pytest.approx(-1.0)
    prof = importance_profile(truth, names, names)
    assert prof.sum() == pytest.approx(1.0)
    # the profile is the mean of each parameter's normalised column
    cols = truth / truth.sum(axis=0)
    assert np.allclose(prof, cols.mean(axis=1))
    # the large-unit column alone reversed changes the pooled rank only by its third
    learnt = truth.copy()
    learnt[:, 2] = truth[::-1, 2]
    assert shap_pooled_rank(learnt, truth, names, names) > shap_pooled_rank(learnt, truth, names, ["c"])
    assert shap_pooled_rank(truth, truth, names, []) is None
    c = check_shap(None, {})
    assert c["passed"] is False and c["value"] is None
    c = check_shap(0.75, {"a": 0.2, "b": 0.6})
    assert c["passed"] is True and c["per_parameter_median"] == pytest.approx(0.4)


def test_phenology_dates_are_compared_as_phases_of_the_local_calendar(earth):
    """DALEC's dates act through sin² with a one-year period: members that put the same dates
    in different years, or the south's half-year lag, are the same map once aligned, and the
    recovery and SHAP of such members equal those of the truth."""
    from differland_dist.model import calendar
    from differland_dist.analysis.truth import recovery
    from differland_dist.vocabulary.parameters import all_bounds, to_bounded, to_unbounded

    names, lat = earth["names"], np.asarray(earth["grid"].lat, np.float64)
    lo, hi = all_bounds()
    jb, jf = names.index("Bday"), names.index("Fday")
    truth = earth["x"]
    assert np.ptp(to_bounded(truth[:, jb], lo[jb], hi[jb])[lat < 0]) < 100  # a seasonal spread ...
    assert abs(np.median(to_bounded(truth[:, jb], lo[jb], hi[jb])[lat < 0])
               - np.median(to_bounded(truth[:, jb], lo[jb], hi[jb])[lat >= 0]) - 182.6) < 30  # ... + half a year

    def shifted(years):  # the truth with its dates moved by whole years (inside the bounds)
        x = truth.copy()
        for j in (jb, jf):
            d = to_bounded(truth[:, j], lo[j], hi[j]) + 365.25 * np.asarray(years)
            assert d.max() < hi[j]
            x[:, j] = to_unbounded(d, lo[j], hi[j])
        return x

    # a member in the first year, one in the second, one that changes year by hemisphere
    members = np.stack([shifted(0), shifted(1), shifted(np.where(lat < 0, 0, 1))])
    split = np.where(np.arange(truth.shape[0]) % 4 == 0, 2, 0)
    raw = recovery(members, truth, split, names)["parameters"]["Bday"]
    assert raw["r2"] < -2 and min(raw["member_r2"][1:]) < -10  # unaligned: years apart
    c = calendar.centres(members, lat, names)
    assert set(c) == {"Bday", "Fday"} and 0 <= c["Bday"] < 365.25
    aligned = calendar.align(members, lat, names, c)
    t_al = calendar.align(truth, lat, names)
    assert np.allclose(aligned[0], aligned[1]) and np.allclose(aligned[0], aligned[2])
    assert np.allclose(aligned[0], t_al, atol=1e-9)  # one centre for both: the same numbers
    keep = [j for j in range(len(names)) if j not in (jb, jf)]
    assert np.array_equal(aligned[:, :, keep], members[:, :, keep])  # other parameters untouched
    d = to_bounded(t_al[:, jb], lo[jb], hi[jb])
    assert d.min() > 2 * 365.25 - 182.7 and d.max() < 3 * 365.25 + 182.7  # the middle year
    assert np.ptp(d) < 100  # the half-year jump is gone: one season, both hemispheres
    rec = recovery(aligned, t_al, split, names)
    assert rec["parameters"]["Bday"]["r2"] > 0.999 and rec["parameters"]["Fday"]["r2"] > 0.999
    # the experiment's ensemble statistics: the members' dates moved into one year, no shift
    days = np.stack([to_bounded(m[:, jb], lo[jb], hi[jb]) for m in members])
    one = calendar.same_year(days)
    assert np.allclose(one, one[0]) and one.min() >= lo[jb] and one.max() <= hi[jb]
    assert np.allclose(np.cos(2 * np.pi * (one - days) / 365.25), 1.0)  # moved by whole years
    # what SHAP explains: a function of raw features whose dates are aligned the same way
    f = calendar.AlignedFunction(lambda X: shifted(1)[X[:, 0].astype(int)], names, c)
    X = np.stack([np.arange(truth.shape[0]), lat], axis=1).astype(np.float64)
    assert np.allclose(f(X), t_al, atol=1e-9)
