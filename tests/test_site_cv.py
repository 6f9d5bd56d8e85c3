"""FLUXNET site experiments: the SITE predictor set (a parameter set per site: the per-site
calibration baseline) and leave-sites-out cross-validation (``differland cv-sites``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from differland_dist.config import load_config
from differland_dist.errors import ConfigError
from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

# Two deciduous broadleaf forests of the northern hemisphere: with PFT predictors alone their
# network inputs are identical (sigmoid(lat) rounds to 1 at both latitudes).
TWINS = "DE-Hai,US-Ha1"


@pytest.fixture(scope="module")
def twin_store(shared_dir, tmp_path_factory):
    from differland_dist.data.importers.sites import sites_to_store

    url = str(tmp_path_factory.mktemp("twins") / "sites.zarr")
    sites_to_store(shared_dir / "data" / "fluxnet_sites", url, monthly=True, only=TWINS)
    return url


def _parameters(store, sets, tmp_path):
    import xarray as xr

    from differland_dist.notebook.trained import TrainedModel
    from random_checkpoint import random_checkpoint

    ckpt = random_checkpoint(store, str(tmp_path / f"{'_'.join(sets)}.npz"), predictor_sets=sets)
    p = TrainedModel.from_checkpoint(ckpt).parameters(
        xr.open_zarr(store, zarr_format=3, consolidated=True))
    return np.stack([p[v].values for v in p.data_vars], axis=1)  # (site, parameter)


def test_site_predictors_give_each_site_its_own_parameters(twin_store, tmp_path):
    from differland_dist.data.batch import predictor_names
    from differland_dist.data.store import open_store

    s = open_store(twin_store)
    onehot = np.stack([np.asarray(s.array(n)[...]) for n in predictor_names(["SITE"])], axis=1)
    assert onehot.shape == (2, 64) and (onehot.sum(axis=1) == 1).all()
    assert (onehot[:, :2] == np.eye(2)).all()  # site k of the store has column k
    pft = _parameters(twin_store, ("PFT",), tmp_path)
    site = _parameters(twin_store, ("SITE",), tmp_path)
    np.testing.assert_array_equal(pft[0], pft[1])  # the control: same class, same parameters
    assert np.abs(site[0] - site[1]).max() > 1e-3 * np.abs(site).max()


def test_site_predictor_set_in_the_config(twin_store, small_store_url):  # noqa: F811
    from differland_dist.data.reader import PatchReader
    from differland_dist.data.batch import predictor_names
    from differland_dist.data.store import open_store

    assert load_config(None, ["data.predictors=SITE"]).data.predictors == ("SITE",)
    with pytest.raises(ConfigError, match="unknown set.*SITES"):
        load_config(None, ["data.predictors=SITES"])
    names = predictor_names(["PFT", "SITE"])
    assert names[:10] == list(predictor_names(["PFT"])) and names[10] == "site_00"
    with pytest.raises(ConfigError, match="site_00"):  # a gridded store has no sites
        PatchReader(open_store(small_store_url), predictor_names(["SITE"]))


def test_cv_folds_and_their_errors():
    from differland_dist.experiment.site_cv import cv_folds, parse_folds

    ids = ["A", "B", "C", "D", "E"]
    assert cv_folds(ids, "loo") == [("A",), ("B",), ("C",), ("D",), ("E",)]
    assert cv_folds(ids, 2) == [("A", "C", "E"), ("B", "D")]
    assert parse_folds("LOO") == "loo" and parse_folds("3") == 3
    for bad in ("1", "x", "0"):
        with pytest.raises(ConfigError, match="--folds"):
            parse_folds(bad)
    with pytest.raises(ConfigError, match="the store has 5"):
        cv_folds(ids, 6)
    from differland_dist.cli.main import build_parser

    ns = build_parser().parse_args(["cv-sites", "c.yaml", "--out", "o", "--predictors", "PFT",
                                    "PFT+CLIM", "--folds", "4"])
    assert ns.predictors == ["PFT", "PFT+CLIM"] and ns.folds == "4"


def test_nse_and_medians():
    from differland_dist.experiment.site_scores import median_scores, nse

    obs = np.array([1.0, 2.0, 3.0, 4.0, 99.0])
    w = np.array([1, 1, 1, 1, 0])  # the last month unobserved: not scored
    assert nse(obs * 1.0, obs, w) == 1.0
    assert nse(np.full(5, 2.5), obs, w) == pytest.approx(0.0)
    assert math.isnan(nse(obs, obs, np.array([1, 1, 0, 0, 0])))
    m = median_scores({"a": {"GPP": 0.1, "ET": math.nan, "NEE": 1, "LAI": 0},
                       "b": {"GPP": 0.3, "ET": 0.5, "NEE": 2, "LAI": 0}})
    assert m["GPP"] == pytest.approx(0.2) and m["ET"] == 0.5


def test_cv_sites_command_scores_every_site_once(twin_store, tmp_path, capsys):
    from differland_dist.cli.main import main

    out = tmp_path / "cv"
    argv = ["cv-sites", "configs/fluxnet_sites.yaml", "--folds", "loo", "--out", str(out),
            "--predictors", "PFT+CLIM", "--json",
            "--set", f"data.url={twin_store}", "--set", "training.steps=2",
            "--set", "training.eval_every=2", "--set", "training.checkpoint_every=2",
            "--set", "ray.workers=1", "--set", "training.patches_per_step=1"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["folds"] == [["DE-Hai"], ["US-Ha1"]]
    r = json.loads((out / "cv_sites.json").read_text())
    assert list(r["sets"]) == ["PFT+CLIM"]
    for name, s in r["sets"].items():
        assert set(s["per_site"]) == {"DE-Hai", "US-Ha1"}  # each site scored when held out
        assert set(s["median"]) == {"GPP", "ET", "NEE", "LAI"}
        assert all(np.isfinite(v) for v in s["per_site"]["DE-Hai"].values())
        assert d["median"][name] == pytest.approx(s["median"], nan_ok=True)
    md = (out / "cv_sites.md").read_text()
    assert "## Predictors PFT+CLIM" in md and "| DE-Hai |" in md and "**median**" in md
    # the fold stores hold the site out as test and have no time split
    import xarray as xr

    f0 = xr.open_zarr(out / "work" / "fold0.zarr", zarr_format=3, consolidated=True)
    assert list(f0.split.values) == [2, 0] and "time_test" not in f0


def test_site_scores_periods(twin_store, tmp_path):
    """Test years and training years of a time-split store are scored apart; a store split by
    time has no held-out sites; an unknown period is refused."""
    from differland_dist.errors import DifferlandError
    from differland_dist.experiment.site_scores import site_scores
    from random_checkpoint import random_checkpoint

    ckpt = random_checkpoint(twin_store, str(tmp_path / "net.npz"), predictor_sets=("SITE",),
                             config={"loss": {"warm_up": 12}})
    test = site_scores(ckpt, twin_store, "test_time")
    train = site_scores(ckpt, twin_store, "train_time")
    assert set(test) == set(train) == {"DE-Hai", "US-Ha1"}
    assert all(np.isfinite(v) for s in test.values() for v in s.values())
    assert test["DE-Hai"]["GPP"] != train["DE-Hai"]["GPP"]
    assert site_scores(ckpt, twin_store, "held_out_sites") == {}
    with pytest.raises(DifferlandError, match="period 'test'"):
        site_scores(ckpt, twin_store, "test")
