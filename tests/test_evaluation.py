"""Evaluation: metrics against hand-computed values, stream comparisons, recovery, reports."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import yaml

from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

from differland_dist.evaluation import metrics as M
from differland_dist.evaluation.evaluate import EvaluationOptions, evaluate
from differland_dist.evaluation.metrics_log import training_log
from differland_dist.evaluation.recovery import parameter_recovery
from differland_dist.evaluation.streams import RULES, comparable
from differland_dist.vocabulary.parameters import PARAM_NAMES
from differland_dist.inference.output import open_output, read_attrs
from differland_dist.vocabulary.series import param_var
from differland_dist.inference.pipeline import InferenceOptions, run_inference

WARM_UP = 3
NO_FIG = EvaluationOptions(figures=False)


# -- metrics ----------------------------------------------------------------------------------------
def test_metrics_hand_computed():
    o = np.array([0.0, 1.0, 2.0, 3.0])
    s = np.array([0.0, 2.0, 2.0, 4.0])
    # e = [0, 1, 0, 1]: SSE 2; SST = 5; cov = 6, var_s = 8
    got = M.scores(o, s)
    assert got["n"] == 4
    assert got["nse"] == pytest.approx(1 - 2 / 5)
    assert got["rmse"] == pytest.approx(math.sqrt(0.5))
    assert got["mae"] == pytest.approx(0.5) and got["bias"] == pytest.approx(0.5)
    assert got["r"] == pytest.approx(6 / math.sqrt(5 * 8))
    assert got["r2"] == pytest.approx(36 / 40)
    perfect = M.scores(o, o)
    assert perfect["nse"] == 1 and perfect["r"] == pytest.approx(1) and perfect["rmse"] == 0
    mean = M.scores(o, np.full(4, o.mean()))
    assert mean["nse"] == 0 and math.isnan(mean["r"]) and mean["bias"] == 0
    shifted = M.scores(o, o + 1)
    assert shifted["nse"] == pytest.approx(1 - 4 / 5) and shifted["r"] == pytest.approx(1)
    assert shifted["bias"] == 1 and shifted["mae"] == 1
    flipped = M.scores(o, -o)
    assert flipped["r"] == pytest.approx(-1) and flipped["r2"] == pytest.approx(1)


def test_metrics_empty_masked_and_nonfinite():
    e = M.scores([], [])
    assert e["n"] == 0 and all(math.isnan(e[k]) for k in M.METRICS if k != "n")
    o = np.array([1.0, np.nan, 3.0, 5.0, 7.0])
    s = np.array([1.0, 2.0, np.inf, 5.0, 8.0])
    assert M.scores(o, s)["n"] == 3
    assert M.scores(o, s, mask=[True, True, True, False, True])["n"] == 2
    assert math.isnan(M.scores([2.0, 2.0], [1.0, 3.0])["nse"])  # SST = 0


def test_moments_merge_equals_whole():
    rng = np.random.default_rng(0)
    o = rng.normal(1e4, 10, 1000)  # large mean: centred sums avoid cancellation
    s = o + rng.normal(0, 3, 1000)
    parts = sum((M.Moments.of(o[a:a + 137], s[a:a + 137]) for a in range(0, 1000, 137)), M.Moments())
    whole = M.scores(o, s)
    for k, v in parts.scores().items():
        assert v == pytest.approx(whole[k], rel=1e-9)


def test_views_hand_computed():
    o = np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 13.0]])
    s = np.array([[1.0, 2.0, 3.0], [11.0, 11.0, 14.0]])
    mask = np.ones_like(o, bool)
    mask[1, 2] = False  # unit 1: only (10, 10) vs (11, 11) observed
    assert M.flat(o, s, mask)["n"] == 5
    sp = M.spatial(o, s, mask)  # means: obs (2, 10), sim (2, 11)
    assert sp["n"] == 2 and sp["bias"] == pytest.approx(0.5) and sp["rmse"] == pytest.approx(math.sqrt(0.5))
    assert sp["nse"] == pytest.approx(1 - 1 / 32)
    rows = M.row_scores(o, s, mask)
    np.testing.assert_allclose(rows["n"], [3, 2])
    np.testing.assert_allclose(rows["nse"], [1.0, np.nan])  # unit 1: constant obs
    np.testing.assert_allclose(rows["bias"], [0.0, 1.0])
    t = M.temporal(o, s, mask, min_obs=2)
    assert t["n_units"] == 2 and t["bias"] == pytest.approx(0.5) and t["nse"] == 1.0
    assert M.temporal(o, s, mask, min_obs=3)["n_units"] == 1
    for i in range(2):
        one = M.scores(o[i], s[i], mask[i])
        for k in M.METRICS:
            np.testing.assert_allclose(rows[k][i], one[k], equal_nan=True)


def test_comparison_rules():
    spy = 4
    obs = np.arange(16.0).reshape(2, 8)
    sim = obs + 1
    w = np.ones_like(obs)
    w[1, 5] = 0
    o, s, m = comparable(RULES["biomass"], obs, w, sim, spy)  # annual means of whole years
    assert o.shape == (2, 2) and m.tolist() == [[True, True], [True, False]]
    np.testing.assert_allclose(o[0], [1.5, 5.5]) and np.testing.assert_allclose(s - o, 1)
    o, s, m = comparable(RULES["som"], obs, w, sim, spy)  # static: obs at step 0, model time mean
    np.testing.assert_allclose(o[:, 0], [0, 8]) and np.testing.assert_allclose(s[:, 0], [4.5, 12.5])
    o, s, m = comparable(RULES["ewt"], obs, w, sim, spy)  # anomaly over observed steps
    np.testing.assert_allclose((s * m).sum(1), 0, atol=1e-12)


def test_recovery_of_true_parameters_is_one(small_ds):  # noqa: F811
    true = small_ds["true_params"].values.astype(np.float64)
    split = small_ds["split"].values
    rec = parameter_recovery(true, true, split, true_x=small_ds["true_x"].values)
    for sp in ("train", "test"):
        r2 = np.array([v["r2"] for v in rec[sp]["parameters"].values()])
        r2u = np.array([v["r2_unbounded"] for v in rec[sp]["parameters"].values()])
        assert np.nanmin(r2) > 1 - 1e-9 and np.nanmin(r2u) > 1 - 1e-6
        assert rec[sp]["median_r2"] == pytest.approx(1.0)
    noisy = true * np.exp(0.3 * np.random.default_rng(0).normal(size=true.shape))
    assert parameter_recovery(true, noisy, split)["test"]["median_r2"] < 0.99
    # dates a year later are the same model: recovered once compared as phases (lat given)
    names = list(parameter_recovery.__defaults__[0])
    later = true.copy()
    for n in ("Bday", "Fday"):
        later[:, names.index(n)] += 365.25
    assert later[:, names.index("Fday")].max() < 1461
    lat = small_ds["lat"].values
    raw = parameter_recovery(true, later, split)["test"]["parameters"]
    phase = parameter_recovery(true, later, split, lat=lat)["test"]["parameters"]
    for n in ("Bday", "Fday"):
        assert raw[n]["r2"] < -10 and phase[n]["r2"] > 1 - 1e-9 and phase[n]["r2_unbounded"] > 1 - 1e-6
    assert phase["LCMA"] == raw["LCMA"]


def test_read_metrics_jsonl():
    text = "\n".join([
        json.dumps({"step": 1, "split": "train", "loss": 10.0, "lai": 4.0, "sif": 6.0,
                    "lr_scale": 1.0, "time_step_s": 0.5, "applied": True}),
        "not json",
        json.dumps({"step": 2, "loss": 8.0, "terms": {"lai": 3.0, "sif": 5.0}}),
        json.dumps({"step": 2, "loss": 9.0, "lai": 4.5, "split": "test"}),
    ])
    train, test, terms = training_log(text)
    assert [r["step"] for r in train] == [1, 2] and train[1]["lai"] == 3.0
    assert len(test) == 1 and terms == ["sif", "lai"]  # loss-term order


# -- end to end -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(small_store_url, tmp_path_factory):  # noqa: F811
    from random_checkpoint import random_checkpoint

    path = str(tmp_path_factory.mktemp("eval_ckpt") / "network.npz")
    return random_checkpoint(small_store_url, path, config={"loss": {"warm_up": WARM_UP}})


@pytest.fixture(scope="module")
def output(checkpoint, small_store_url, tmp_path_factory):  # noqa: F811
    url = str(tmp_path_factory.mktemp("eval_out") / "out.zarr")
    run_inference(checkpoint, url, small_store_url, options=InferenceOptions(executor="local"))
    return url


def test_evaluate_output_store(output, small_ds, tmp_path):  # noqa: F811
    out = str(tmp_path / "ev")
    r = evaluate(output, out=out, options=EvaluationOptions(n_series_pixels=2))
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    md = (tmp_path / "ev" / "evaluation.md").read_text()
    assert list(saved["streams"]) == [s for s in RULES]
    assert saved["inputs"]["warm_up"] == WARM_UP and saved["inputs"]["steps_evaluated"] == 24 - WARM_UP
    # vod is off in the default config: reported with n = 0 and null metrics
    vod = saved["streams"]["vod"]
    assert vod["note"] == "switched off in the config"
    assert vod["test"]["flat"]["n"] == 0 and vod["test"]["flat"]["nse"] is None
    # n of a pixel stream = observed pixel-steps after warm-up
    w = small_ds["obs_lai_weight"].values[:, WARM_UP:] > 0
    split = small_ds["split"].values
    assert saved["streams"]["lai"]["train"]["flat"]["n"] == int(w[split == 0].sum())
    assert saved["streams"]["lai"]["test"]["flat"]["n"] == int(w[split == 2].sum())
    assert saved["streams"]["lai"]["test"]["spatial"]["n"] == int((w[split == 2].sum(1) > 0).sum())
    assert saved["streams"]["lai"]["dev"]["flat"]["n"] == int(w[split == 1].sum())
    # patch streams count patch-steps
    n_test_patches = len(np.unique(small_ds["patch"].values[split == 2]))
    assert saved["streams"]["nbe"]["test"]["flat"]["n"] == n_test_patches * (24 - WARM_UP)
    assert saved["streams"]["som"]["train"]["flat"]["n"] == int((split == 0).sum())
    rec = saved["recovery"]
    assert set(rec["test"]["parameters"]) == set(PARAM_NAMES)
    assert "## test patches (never trained on or selected by): temporal" in md and "| lai | pixel |" in md and "Parameter recovery" in md
    figs = set(r["figures"])
    assert {"figures/parameter_maps.png", "figures/scatter_lai.png", "figures/scatter_nbe.png",
            "figures/recovery.png"} <= figs
    assert sum(f.startswith("figures/series_pixel") for f in figs) == 2
    for f in figs:
        assert (tmp_path / "ev" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_perfect_model_scores_one(output, small_ds, tmp_path):  # noqa: F811
    """Series replaced by the observations (and parameters by the truth): NSE 1 for those
    streams and recovery R² 1, through the whole block-wise path (alignment, warm-up, patches)."""
    url = str(tmp_path / "perfect.zarr")
    shutil.copytree(output, url)
    g = open_output(url, mode="r+")
    for series, product in (("lai", "lai"), ("nbe", "nbe"), ("et", "et_gleam")):
        g[series][:] = np.nan_to_num(small_ds[f"obs_{product}"].values)
    names = [str(n) for n in small_ds["param"].values]
    for j, n in enumerate(names):
        g[param_var(n)][:] = small_ds["true_params"].values[:, j]
    r = evaluate(url, out=str(tmp_path / "ev"), options=NO_FIG)
    for stream in ("lai", "nbe", "et_gleam"):
        for sp in ("train", "test"):
            for view in ("flat", "spatial"):
                assert r["streams"][stream][sp][view]["nse"] == pytest.approx(1.0), (stream, sp, view)
                assert r["streams"][stream][sp][view]["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert r["recovery"]["test"]["median_r2"] == pytest.approx(1.0, abs=1e-6)
    assert r["recovery"]["test"]["median_r2_unbounded"] == pytest.approx(1.0, abs=1e-3)
    assert r["streams"]["sif"]["test"]["flat"]["nse"] < 1


def test_missing_product_reported_not_error(output, tmp_path):
    """A stream whose product is not in the store: n = 0 and a note."""
    import zarr

    url = str(tmp_path / "o.zarr")
    shutil.copytree(output, url)
    g = zarr.open_group(url, mode="r+")
    cfg = json.loads(g.attrs["config_json"])
    cfg["data"]["products"]["som"] = "som_other"
    g.attrs["config_json"] = json.dumps(cfg)
    r = evaluate(url, out=str(tmp_path / "ev"), options=NO_FIG)
    assert "not in the store" in r["streams"]["som"]["note"]
    assert r["streams"]["som"]["train"]["temporal"]["n"] == 0


def test_evaluate_run_dir_cli(checkpoint, small_store_url, tmp_path, capsys):  # noqa: F811
    """A run directory: inference into RUN_DIR/inference.zarr, then evaluation with training
    curves from metrics.jsonl."""
    from differland_dist.cli.main import main
    from random_checkpoint import random_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    random_checkpoint(small_store_url, str(run / "network.npz"), config={"loss": {"warm_up": WARM_UP}})
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"url": small_store_url}}))
    lines = [{"step": i, "loss": 100.0 / i, "lai": 60.0 / i, "sif": 40.0 / i} for i in range(1, 6)]
    lines += [{"step": i, "loss": 120.0 / i, "lai": 70.0 / i, "split": "test"} for i in (2, 4)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rc = main(["evaluate", str(run), "--executor", "local", "--series-pixels", "1",
               "--map-params", "f_gpp,LCMA"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "evaluation.md" in out and "parameter recovery" in out
    assert read_attrs(str(run / "inference.zarr"))["complete"] is True
    ev = run / "evaluation"
    assert (ev / "evaluation.json").exists() and (ev / "evaluation.md").exists()
    assert (ev / "figures" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    # the output store names its run directory: evaluating the store finds the curves too
    r = evaluate(str(run / "inference.zarr"), options=EvaluationOptions(n_series_pixels=0, map_params=()))
    assert r["inputs"]["run_dir"] == str(run) and "figures/training_curves.png" in r["figures"]
    assert r["out_dir"] == str(run / "inference_evaluation")
    # the run's network changes (training went on): its inference output is replaced
    digest = read_attrs(str(run / "inference.zarr"))["network_sha256"]
    random_checkpoint(small_store_url, str(run / "network.npz"), seed=7,
                      config={"loss": {"warm_up": WARM_UP}})
    evaluate(str(run), options=NO_FIG, inference=InferenceOptions(executor="local"))
    after = read_attrs(str(run / "inference.zarr"))
    assert after["complete"] is True and after["network_sha256"] != digest


def test_evaluate_bad_target(tmp_path):
    from differland_dist.errors import DifferlandError

    with pytest.raises(DifferlandError, match="neither an inference output"):
        evaluate(str(tmp_path), options=NO_FIG)
