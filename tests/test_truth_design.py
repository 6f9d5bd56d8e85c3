"""Truth designs as data (synthetic/truth_design.py, configs/truths/) and the geography's
PFT-climate coupling: the shipped designs reproduce the stores of the code before them, bad
designs fail with one line naming the key, random designs range from PFT-free to PFT-only."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from differland_dist import synthetic as synth
from differland_dist.errors import ConfigError, DifferlandError


def _h(arrays) -> str:
    m = hashlib.sha256()
    for a in arrays:
        m.update(np.ascontiguousarray(a).tobytes())
    return m.hexdigest()[:16]


# sha256 prefixes measured with the code before designs became files (commit c2d991b): the
# Truth arrays, the 10-degree predictors, and every numeric variable of a 15-degree, 1-year
# structured store of seed 3 (the last one ran DALEC: that test takes ~10 s)
BEFORE = {(0, "random"): "b6b0ae7282a54cb3", (0, "structured"): "123e5936f24308b9",
          (7, "structured"): "851174f9a3820e5a", (7, "random"): "01533a0cc8a89312"}
PREDICTORS_BEFORE = "ed738a3b9b37819a"
STORE_BEFORE = "a5a35ad4cb919df1"


def test_shipped_designs_are_files_and_reproduce_the_earlier_truths(tmp_path):
    assert set(synth.shipped_designs()) >= {"random", "structured"}
    for (seed, name), want in BEFORE.items():
        assert _h(synth.make_truth(seed, name)) == want, (seed, name)
    g = synth.make_grid(10.0)
    p = synth.make_predictors(g.lat, g.lon, 0)
    assert _h([p[k] for k in sorted(p)]) == PREDICTORS_BEFORE
    # the same design copied to a file of its own is the same truth
    d = synth.load_design("structured")
    f = tmp_path / "mine.yaml"
    f.write_text(d.to_yaml())
    assert _h(synth.make_truth(7, str(f))) == BEFORE[(7, "structured")]
    assert synth.load_design(str(f)) == d
    # the module constants are read from the file
    assert synth.STRUCTURE["LCMA"] == ({"leaf_economics": 0.4, "stand_age": 1.0}, 0.4)


def test_a_shipped_store_is_bit_identical_to_the_earlier_one():
    ds = synth.make_synthetic(resolution=15, years=1, seed=3, truth="structured")
    assert _h([ds[v].values for v in sorted(ds.variables) if ds[v].dtype != object]) == STORE_BEFORE
    assert ds.attrs["truth_design"] == "structured"
    assert "truth_design_yaml" not in ds.attrs and "synth_pft_climate_coupling" not in ds.attrs


@pytest.mark.parametrize("text, match", [
    ("name: x\nkind: latents\nlatents: {a: {weights: {MAT: 1}}}\nparameters: {}\ncolour: red\n",
     r"^mine\.yaml\.colour: unknown key"),
    ("name: x\nkind: latents\nlatents: {a: {weights: {MATT: 1}}}\nparameters: {}\n",
     r"^mine\.yaml\.latents\.a\.weights\.MATT: unknown predictor"),
    ("name: x\nkind: latents\nlatents: {a: {weights: {MAT: 1}}}\nparameters: {f_gp: {drivers: {a: 1}, log_sd: 0.1}}\n",
     r"^mine\.yaml\.parameters\.f_gp: unknown parameter"),
    ("name: x\nkind: latents\nlatents: {a: {weights: {MAT: 1}}}\nparameters: {f_gpp: {drivers: {b: 1}, log_sd: 0.1}}\n",
     r"^mine\.yaml\.parameters\.f_gpp\.drivers\.b: unknown latent"),
    ("name: x\nkind: latents\nlatents: {a: {weights: {MAT: 1}, offset: x}}\nparameters: {}\n",
     r"^mine\.yaml\.latents\.a\.offset: expected a finite number"),
    ("name: x\nkind: latents\nlatents: {a: {weights: {MAT: 1}}}\nparameters: {f_gpp: {drivers: {a: 1}, log_sd: -1}}\n",
     r"^mine\.yaml\.parameters\.f_gpp\.log_sd: expected >= 0"),
    ("name: x\nkind: network\nhidden: 0\namplitude: {process: 1, phenology: 1, pools: 1}\n",
     r"^mine\.yaml\.hidden: expected an integer >= 1"),
    ("name: x\nkind: tree\n", r"^mine\.yaml\.kind: expected 'network' or 'latents'"),
])
def test_bad_designs_fail_with_one_line_naming_the_key(tmp_path, monkeypatch, text, match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        synth.load_design("mine.yaml")
    assert "\n" not in str(e.value)


def test_unknown_design_names_and_settings_fail_before_any_work(tmp_path):
    with pytest.raises(DifferlandError, match=r"^--truth 'paper': expected a design file"):
        synth.synth_to_store(str(tmp_path / "s.zarr"), truth="paper")
    with pytest.raises(DifferlandError, match=r"^--truth nope\.yaml: truth design file not found"):
        synth.synth_to_store(str(tmp_path / "s.zarr"), truth="nope.yaml")
    with pytest.raises(DifferlandError, match=r"^--pft-climate-coupling 1\.5: expected a number in \[0, 1\]"):
        synth.synth_to_store(str(tmp_path / "s.zarr"), pft_climate_coupling=1.5)
    assert not (tmp_path / "s.zarr").exists()


def test_random_structured_designs_are_valid_reproducible_and_spread_their_pft_weight():
    a, b = synth.random_structured_design(3), synth.random_structured_design(3)
    assert a == b and a != synth.random_structured_design(4)
    assert synth.design_from_dict(a.to_dict(), "round trip") == a  # a design the loader accepts
    assert np.array_equal(synth.make_truth(3, "random-structured").w2, synth.build_truth(a, 3).w2)
    w = sorted(synth.truth_design.design_pft_weight(s) for s in range(5))
    assert w[0] == 0.0 and w[-1] > 0.85 and max(np.diff(w)) < 0.4
    with pytest.raises(DifferlandError, match="pft_weight"):
        synth.random_structured_design(0, pft_weight=1.2)


def _median_share(x, names, pred, patch):
    from differland_dist.analysis.partition import cv_r2, standardise
    from differland_dist.data import schema

    X_pft = np.stack([pred[k] for k in schema.PREDICTOR_SETS["PFT"]], axis=1)
    X_all = np.stack([pred[k] for k in synth.TRUTH_FEATURES], axis=1)
    out = []
    for n in names:
        y = standardise(x[:, [list(synth.PARAM_NAMES_ALL).index(n)]])[:, 0]
        r2a = cv_r2(X_all, y, patch, n_splits=3, max_iter=20)
        if r2a >= 0.2:
            out.append(max(cv_r2(X_pft, y, patch, n_splits=3, max_iter=20), 0.0) / r2a)
    return float(np.median(out))


def test_the_coupling_sets_how_predictable_climate_is_from_pfts_and_low_shares_are_constructible():
    """At coupling 0 vegetation says nothing about MAT and a PFT-free random design has a true
    PFT share <= 0.3 while a PFT-heavy one has >= 0.8 (benchmarks/pft_climate_coupling.py
    measured 0.0 and 1.0 over all 22 parameters; here every third, a fast test); at the
    default 1, MAT is mostly predictable from PFT fractions (0.93 measured at 10 degrees)."""
    from differland_dist.analysis.partition import cv_r2
    from differland_dist.data import schema

    g = synth.make_grid(10.0)
    r2 = {}
    for c in (0.0, 1.0):
        pred = {k: np.asarray(v, np.float64) for k, v in synth.make_predictors(g.lat, g.lon, 0, c).items()}
        X = np.stack([pred[k] for k in schema.PREDICTOR_SETS["PFT"]], axis=1)
        r2[c] = cv_r2(X, pred["MAT"], g.patch, n_splits=3, max_iter=20)
    assert r2[0.0] < 0.2 < 0.8 < r2[1.0], r2
    pred = {k: np.asarray(v, np.float64) for k, v in synth.make_predictors(g.lat, g.lon, 0, 0.0).items()}
    feats = np.stack([pred[k] for k in synth.TRUTH_FEATURES], axis=1)
    shares = {}
    for seed in (0, 8):  # PFT weights 0 and 0.94
        d = synth.random_structured_design(seed)
        x = synth.apply_truth(synth.build_truth(d, seed), feats, g.lat)
        shares[seed] = _median_share(x, list(d.parameters)[::3], pred, g.patch)
    assert shares[0] <= 0.3 and shares[8] >= 0.8, shares
