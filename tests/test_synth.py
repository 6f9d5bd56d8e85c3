"""The synthetic Earth: determinism, plausibility, coverage, patches, split, the hidden truth."""

from __future__ import annotations

import os

import numpy as np
import pytest

from differland_dist.cli.main import main
from differland_dist import synthetic as synth
from differland_dist.data import schema
from differland_dist.data.store import open_store
from differland_dist.data.validate import validate_dataset, validate_store
from differland_dist.errors import DifferlandError
from differland_dist.vocabulary.parameters import (
    PHENOLOGY_PARAMETERS, POOLS, PROCESS_PARAMETERS, all_bounds, to_bounded)
from synth_fixtures import SMALL, small_ds  # noqa: F401 - fixture


def _files(root: str) -> dict[str, bytes]:
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def test_same_seed_same_store_byte_for_byte(tmp_path):
    kw = dict(resolution=15.0, years=1, max_patch_size=8)
    a, b, c = (str(tmp_path / n) for n in ("a.zarr", "b.zarr", "c.zarr"))
    synth.synth_to_store(a, seed=3, **kw)
    synth.synth_to_store(b, seed=3, **kw)
    synth.synth_to_store(c, seed=4, **kw)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert len(fa) > 100 and fa.keys() == fb.keys()
    assert [k for k in fa if fa[k] != fb[k]] == []  # every chunk and metadata object
    # another seed: other data (same layout: the land mask does not depend on the seed)
    assert fa.keys() == fc.keys()
    differ = {k.split("/")[0] for k in fa if fa[k] != fc[k]}
    assert {"t_min", "MAT", "true_params", "obs_lai", "split"} <= differ


def test_synthetic_dataset_is_valid(small_ds):
    assert validate_dataset(small_ds) == []
    assert small_ds.attrs["source"] == "synthetic"
    assert small_ds.sizes["time"] == 24 and small_ds.sizes["param"] == 40


def test_land_mask_is_real():
    frac = synth.land_fraction(5.0)
    assert frac.shape == (36, 72)

    def cell(lat, lon):
        return frac[int((90 - lat) // 5), int((lon + 180) // 5)]

    assert cell(22.5, 12.5) > 0.99      # Sahara
    assert cell(-2.5, -62.5) > 0.99     # Amazon
    assert cell(62.5, 97.5) > 0.99      # Siberia
    assert cell(-2.5, -152.5) < 0.01    # central Pacific
    assert cell(32.5, -42.5) < 0.01     # North Atlantic
    grid = synth.make_grid(5.0)
    assert 500 < grid.lat.size < 700    # the default: a few hundred pixels
    assert grid.lat.min() > -60


def test_patches_sizes_coherent_and_split(small_ds):
    patch = small_ds["patch"].values
    sizes = np.bincount(patch)
    assert sizes.min() >= 1 and sizes.max() <= SMALL["max_patch_size"]
    a, b = small_ds.attrs["patch_tile_cells"]
    row, col = small_ds["row"].values, small_ds["col"].values
    for p in range(sizes.size):  # every patch sits inside one tile of a x b grid cells
        m = patch == p
        assert len(set(row[m] // a)) == 1 and len(set(col[m] // b)) == 1
        assert row[m].max() - row[m].min() < a and col[m].max() - col[m].min() < b
    split = small_ds["split"].values
    per_patch = {int(p): set(split[patch == p].tolist()) for p in range(sizes.size)}
    assert all(len(s) == 1 for s in per_patch.values())
    n_test = sum(s == {1} for s in per_patch.values())
    assert n_test == round(0.1 * sizes.size)
    # lat/lon/row/col agree with the grid
    r = small_ds.attrs["grid_resolution_deg"]
    np.testing.assert_allclose(small_ds["lat"].values, 90 - (row + 0.5) * r)
    np.testing.assert_allclose(small_ds["lon"].values, -180 + (col + 0.5) * r)


def test_default_grid_patches_are_papers_tiles():
    assert synth.patch_tile(0.25, 320) == (16, 20)  # 4 x 5 degrees = 320 pixels
    assert synth.patch_tile(5.0, 320) == (4, 4)
    a, b = synth.patch_tile(0.1, 320)
    assert a * b <= 320


def test_forcing_and_predictors_plausible(small_ds):
    d = {k: small_ds[k].values for k in small_ds.data_vars}
    assert np.all(d["t_min"] <= d["t_max"])
    assert -70 < d["t_min"].min() and d["t_max"].max() < 55
    assert 0 <= d["swrad"].min() and d["swrad"].max() < 40
    assert np.all(d["precip"] >= 0) and np.all(d["vpd"] >= 0)
    assert 0 < (d["burned_area"] > 0).mean() < 0.1  # occasional fires
    co2 = d["co2"]
    assert 365 < co2.min() and co2[-12:].mean() > co2[:12].mean()  # rising
    delta_t = d["delta_t"]
    assert set(delta_t.tolist()) <= {28.0, 29.0, 30.0, 31.0} and delta_t[:12].sum() == 365
    pft = np.stack([d[k] for k in schema.PREDICTOR_SETS["PFT"]], axis=1)
    np.testing.assert_allclose(pft.sum(axis=1), 1.0, rtol=1e-5)
    texture = d["SAND"] + d["SILT"] + d["CLAY"]
    np.testing.assert_allclose(texture, 100.0, rtol=1e-4)
    # climate follows latitude: the tropics are warmer and wetter than the high north
    lat = small_ds["lat"].values
    trop, north = np.abs(lat) < 20, lat > 50
    assert d["MAT"][trop].mean() > d["MAT"][north].mean() + 15
    assert d["MAP"][trop].mean() > d["MAP"][north].mean()
    # seasons: northern July warmer than January
    tmean = (d["t_min"] + d["t_max"]) / 2
    assert (tmean[north, 6] > tmean[north, 0]).all()


def test_fields_are_smooth_not_white_noise():
    """Neighbouring cells are far more alike than random pairs of cells."""
    grid = synth.make_grid(5.0)
    pred = synth.make_predictors(grid.lat, grid.lon, seed=0)
    key = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(grid.row, grid.col))}
    pairs = [(i, key[(r, c + 1)]) for (r, c), i in key.items() if (r, c + 1) in key]
    i, j = np.array(pairs).T
    rng = np.random.default_rng(0)
    k = rng.permutation(grid.lat.size)
    for name in ("elevation", "SAND", "forest_age", "MAP"):
        x = pred[name].astype(np.float64)
        near = np.mean((x[i] - x[j]) ** 2)
        far = np.mean((x - x[k]) ** 2)
        assert near < 0.5 * far, name


def test_observation_coverage(small_ds):
    ds = small_ds
    P, T = ds.sizes["pixel"], ds.sizes["time"]
    cov = {p: float(np.isfinite(ds[f"obs_{p}"].values).mean()) for p in
           ("sif", "lai", "et_gleam", "nbe", "fire", "ewt", "biomass", "som", "gpp_flux")}
    assert cov["et_gleam"] == 1.0 and cov["nbe"] == 1.0 and cov["fire"] == 1.0
    assert cov["sif"] > 0.75 and cov["lai"] > 0.75
    assert 0.7 < cov["ewt"] < 1.0
    assert 0.3 < cov["biomass"] < 0.9
    assert ds["obs_som"].dims == ("pixel",) and cov["som"] == 1.0
    towers = np.isfinite(ds["obs_gpp_flux"].values).any(axis=1)
    assert 1 <= towers.sum() <= max(1, 0.1 * P)
    assert "vod" not in {ds[v].attrs.get("stream") for v in ds.data_vars}
    # weight 1 exactly where observed
    for p in ("sif", "nbe", "biomass", "som"):
        v, w = ds[f"obs_{p}"].values, ds[f"obs_{p}_weight"].values
        assert np.array_equal(np.isfinite(v), w == 1) and set(np.unique(w)) <= {0.0, 1.0}
    # patch-level products: one value per patch and month
    patch = ds["patch"].values
    for p in ("nbe", "fire", "ewt"):
        v = ds[f"obs_{p}"].values
        for q in np.unique(patch):
            block = v[patch == q]
            assert np.allclose(block, block[0], equal_nan=True), (p, q)
        assert ds[f"obs_{p}"].attrs["level"] == "patch"
    # biomass: annual values, whole years observed or not
    bio = ds["obs_biomass"].values.reshape(P, T // 12, 12)
    seen = np.isfinite(bio)
    assert np.all(seen.all(axis=2) | ~seen.any(axis=2))
    assert np.allclose(bio, bio[:, :, :1], equal_nan=True)


def test_model_outputs_plausible(small_ds):
    lai = small_ds["obs_lai"].values
    assert np.nanmin(lai) >= 0 and np.nanpercentile(lai, 99) < 10
    gpp = small_ds["obs_gpp_flux"].values
    assert np.nanmax(gpp) < 20
    sif = small_ds["obs_sif"].values
    assert -1 < np.nanmin(sif) and np.nanmax(sif) < 4
    et = small_ds["obs_et_gleam"].values
    assert np.nanmean(et) > 0.2 and np.nanmax(et) < 15
    bio = small_ds["obs_biomass"].values
    assert 100 < np.nanmedian(bio) < 30000
    som = small_ds["obs_som"].values
    assert 1000 < np.median(som) < 50000


def test_truth_is_stored_and_reproducible(small_ds):
    ds = small_ds
    assert list(ds["param"].values) == list(synth.PARAM_NAMES_ALL)
    assert ds["param"].size == len(PROCESS_PARAMETERS) + len(PHENOLOGY_PARAMETERS) + len(POOLS)
    feats = np.stack([ds[k].values for k in ds["truth_feature"].values], axis=1).astype(np.float64)
    z = (feats - ds["truth_centre"].values) / ds["truth_scale"].values
    h = np.tanh(z @ ds["truth_w1"].values + ds["truth_b1"].values)
    b2 = np.where((ds["lat"].values >= 0)[:, None], ds["truth_b2_north"].values,
                  ds["truth_b2_south"].values)
    np.testing.assert_allclose(b2 + h @ ds["truth_w2"].values, ds["true_x"].values, rtol=1e-5, atol=1e-5)
    x = ds["true_x"].values
    assert np.abs(x).max() < 4  # well inside the bounds
    lo, hi = all_bounds()
    p = ds["true_params"].values
    assert np.all(p > lo) and np.all(p < hi)
    np.testing.assert_allclose(p, to_bounded(x.astype(np.float64), lo, hi), rtol=1e-5)
    # parameters vary over space (the relation is not constant)
    rel_sd = np.std(np.log(p), axis=0)
    assert np.median(rel_sd) > 0.05
    # phenology follows the hemisphere
    bday = p[:, synth.PARAM_NAMES_ALL.index("Bday")]
    lat = ds["lat"].values
    assert bday[lat < -10].mean() > bday[lat > 10].mean() + 100


def test_monthly_axis():
    ax = synth.monthly_axis(2001, 2)
    assert ax["time"][0] == 15.5 and ax["doy"][0] == 16.5
    assert ax["delta_t"][1] == 28 and ax["delta_t"][12 + 1] == 28
    np.testing.assert_allclose(np.diff(ax["time"]), (ax["delta_t"][:-1] + ax["delta_t"][1:]) / 2)
    assert synth.monthly_axis(2000, 1)["time"][0] < 0  # before the reference date


def test_bad_arguments():
    with pytest.raises(DifferlandError, match="resolution 0.7"):
        synth.make_grid(0.7)
    with pytest.raises(DifferlandError, match="years"):
        synth.make_synthetic(resolution=15.0, years=0)
    with pytest.raises(DifferlandError, match="test_fraction"):
        synth.make_synthetic(resolution=15.0, test_fraction=1.5)


def test_cli_synth_then_validate(tmp_path, capsys):
    url = str(tmp_path / "cli.zarr")
    args = ["-q", "synth", "--out", url, "--resolution", "15", "--years", "1", "--seed", "1",
            "--max-patch-size", "16"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    store = open_store(url)
    assert store.n_time == 12 and store.max_patch_size == 16
    assert main(args) == 1  # exists: refuses without --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert validate_store(url) == []


def test_observations_outside_their_range_become_gaps():
    """A rare truth outside a product's range (LAI > 15 here) is a gap, not an invalid store."""
    P, T = 4, 24
    grid = synth.LandPixels(lat=np.zeros(P, np.float32), lon=np.zeros(P, np.float32),
                      row=np.zeros(P, np.int32), col=np.arange(P, dtype=np.int32),
                      patch=np.array([0, 0, 1, 1], np.int32), shape=(1, P), tile=(1, 2))
    sim = {k: np.full((P, T), 1.0, np.float32) for k in synth.KEPT_OUTPUTS}
    sim["lai"][2, 5] = 40.0
    obs = synth.make_observations(sim, {"swrad": np.full((P, T), 20.0, np.float32)}, grid,
                                  synth.monthly_axis(2001, 2), seed=0)
    value, weight = obs["lai"][:2]
    assert np.isnan(value[2, 5]) and weight[2, 5] == 0
    assert np.nanmax(value) < 15


def test_structured_truth_store_via_the_cli(tmp_path, capsys):
    """`differland synth --truth structured`: a valid store that records its design, whose
    stored relation reproduces true_x; an unknown design fails before anything is written."""
    url = str(tmp_path / "s.zarr")
    assert main(["synth", "--out", url, "--resolution", "15", "--years", "1", "--truth", "structured"]) == 0
    import xarray as xr

    ds = xr.open_zarr(url, zarr_format=3, consolidated=False)
    assert ds.attrs["truth_design"] == "structured"
    t = synth.Truth(*(np.asarray(ds[k].values, np.float64) for k in (
        "truth_centre", "truth_scale", "truth_w1", "truth_b1", "truth_w2", "truth_b2_north",
        "truth_b2_south")))
    assert t.w1.shape == (len(synth.TRUTH_FEATURES), len(synth.LATENTS))
    feats = np.stack([ds[k].values for k in synth.TRUTH_FEATURES], axis=1)
    np.testing.assert_allclose(synth.apply_truth(t, feats, ds["lat"].values), ds["true_x"].values,
                               rtol=1e-5, atol=1e-5)
    assert main(["synth", "--out", str(tmp_path / "t.zarr"), "--truth", "paper"]) != 0
    assert "--truth 'paper': expected a design file" in capsys.readouterr().err
    with pytest.raises(DifferlandError, match="--truth 'paper'"):
        synth.synth_to_store(str(tmp_path / "u.zarr"), resolution=15, years=1, truth="paper")
    assert not (tmp_path / "t.zarr").exists() and not (tmp_path / "u.zarr").exists()
