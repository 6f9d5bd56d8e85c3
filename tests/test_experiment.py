"""Experiments (issue 13): the three splits, the grid config, a grid end to end on a local Ray
cluster (concurrent members, a failing member, the ensemble and the scores), and a killed
driver resumed to bit-identical member networks."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from cf_check import COMBINED_VIEWS, UWUE, cf_problems, ensemble_sample, unexpected
from storage_servers import gcs_emulator  # noqa: F401 - fixture

from differland_dist.data import splits
from differland_dist.errors import ConfigError
from differland_dist.storage.location import Location

ROOT = Path(__file__).resolve().parents[1]
CACHE = "/tmp/differland-test-jax-cache"


# -- three splits ---------------------------------------------------------------------------------
def test_synth_makes_train_dev_and_test_by_patch():
    from differland_dist.synthetic import make_synthetic

    ds = make_synthetic(resolution=15, years=1, seed=0, max_patch_size=8, dev_fraction=0.2,
                        test_fraction=0.15)
    split, patch = ds["split"].values, ds["patch"].values
    n = int(patch.max()) + 1
    per_patch = {int(p): set(split[patch == p].tolist()) for p in range(n)}
    assert all(len(v) == 1 for v in per_patch.values())  # constant within a patch
    codes = np.array([next(iter(per_patch[p])) for p in range(n)])
    assert (codes == 2).sum() == round(0.15 * n) and (codes == 1).sum() == round(0.2 * n)
    assert ds.attrs[splits.CONVENTION_ATTR] == splits.CONVENTION
    with pytest.raises(ConfigError, match="dev_fraction"):
        make_synthetic(resolution=15, years=1, dev_fraction=1.2)


def test_member_split_redraw_keeps_test_fixed():
    written = splits.PatchSplit(np.arange(0, 16), np.arange(16, 18), np.arange(18, 20))
    a, b, a2 = splits.redraw(written, 1), splits.redraw(written, 2), splits.redraw(written, 1)
    assert np.array_equal(a.test, written.test) and np.array_equal(b.test, written.test)
    assert np.array_equal(a.dev, a2.dev) and not np.array_equal(a.dev, b.dev)
    assert len(a.dev) == 2 and len(a.train) == 16
    assert not set(a.dev) & set(a.train) and set(a.dev) | set(a.train) == set(range(18))


def test_old_two_split_store_reads_one_as_dev(caplog):
    runs = {0: slice(0, 2), 1: slice(2, 4), 2: slice(4, 6)}
    split = np.array([0, 0, 1, 1, 0, 0], np.int8)
    with caplog.at_level(logging.WARNING):
        s = splits.from_store(runs, split, {}, "old.zarr")
    assert list(s.train) == [0, 2] and list(s.dev) == [1] and len(s.test) == 0
    assert "read as dev" in caplog.text


# -- the grid config ------------------------------------------------------------------------------
def test_grid_config_expands_and_validates(tmp_path):
    from differland_dist.experiment import load_grid, member_config

    g = load_grid(ROOT / "configs" / "experiment_demo.yaml", ["base.data.url=x.zarr"])
    assert [m.key for m in g.members] == ["PFT/m000", "PFT/m001", "PFT/m002", "PFT+CLIM+SOIL+AGE/m000",
                                          "PFT+CLIM+SOIL+AGE/m001", "PFT+CLIM+SOIL+AGE/m002"]
    c = member_config(g, g.members[4])
    assert c.data.predictors == ("PFT", "CLIM", "SOIL", "AGE") and c.training.seed == 1
    assert c.data.split_seed == 1 and c.training.order_seed == 1 and c.ray.workers == 1
    assert c.training.steps == 150 and c.data.url == "x.zarr"
    # vary run: member seed s trains on the paper's published partition s + 1
    runs = load_grid(ROOT / "configs" / "experiment_demo.yaml",
                     ["base.data.url=x.zarr", "vary=[network_seed, run]", "members=[0, 4]"])
    assert [member_config(runs, m).data.run for m in runs.members[:2]] == [1, 5]
    assert member_config(runs, runs.members[1]).data.split_seed is None
    paper = load_grid(ROOT / "configs" / "experiment_paper.yaml")
    assert len(paper.predictor_sets) == 7 and len(paper.seeds) == 20 and paper.keep_best == 10
    assert paper.resources.gpus_per_worker == 1
    twin = load_grid(ROOT / "configs" / "experiment_truth.yaml", ["base.data.url=x.zarr"])
    assert [s.name for s in twin.predictor_sets] == ["PFT", "PFT+CLIM+SOIL+AGE"] and twin.keep_best == 4
    assert member_config(twin, twin.members[0]).training.steps == 3000 and len(twin.seeds) == 12
    assert member_config(twin, twin.members[0]).network.head_init_scale == 0.1
    for override, key in ((["keep_best=9"], "keep_best"), (["members=0"], "members"),
                          (["predictor_sets=[[PFT], [FOO]]"], "predictor_sets[1]"),
                          (["vary=[colour]"], "vary"), (["colour=1"], "colour"),
                          (["vary=[run, split_seed]"], "vary: run and split_seed"),
                          (["base.training.steps=-1"], "training.steps")):
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_grid(ROOT / "configs" / "experiment_demo.yaml", override)


def test_an_experiment_written_before_a_new_config_key_resumes(tmp_path):
    """experiment.yaml of an earlier version lacks keys added since (training.pixels_per_call):
    --resume reads them as defaults; a genuinely changed value is still refused."""
    import yaml

    from differland_dist.errors import DifferlandError
    from differland_dist.experiment.pipeline import CONFIG_NAME, prepare_dir

    store = str(tmp_path / "x.zarr")
    out = tmp_path / "exp"
    prepare_dir(_grid(store), str(out), False)
    saved = yaml.safe_load((out / CONFIG_NAME).read_text())
    assert saved["base"]["training"].pop("pixels_per_call") is None
    (out / CONFIG_NAME).write_text(yaml.safe_dump(saved))
    prepare_dir(_grid(store), str(out), True)   # accepted: the missing key is its default
    (out / CONFIG_NAME).write_text(yaml.safe_dump(saved))
    changed = _grid(store, extra=["base.training.pixels_per_call=4096"])
    with pytest.raises(DifferlandError, match=r"differs in \['base'\]"):
        prepare_dir(changed, str(out), True)


# -- a grid end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exp_store(tmp_path_factory):
    from differland_dist.synthetic import synth_to_store

    url = str(tmp_path_factory.mktemp("exp") / "earth.zarr")
    synth_to_store(url, resolution=15, years=2, seed=5, max_patch_size=8, dev_fraction=0.2,
                   test_fraction=0.2, truth="structured")
    return url


def _grid(store: str, sets=None, members=2, steps=12, keep_best=1, extra=()):
    """configs/experiment_demo.yaml, made smaller (the demo grid the docs show)."""
    from differland_dist.experiment import load_grid

    over = [f"base.data.url={store}", f"base.training.steps={steps}", "base.training.patches_per_step=4",
            "base.training.patches_per_call=4", "base.training.eval_every=4",
            "base.training.checkpoint_every=4", "base.optimizer.warmup_steps=2",
            "base.ray.runtime_env={env_vars: {JAX_COMPILATION_CACHE_DIR: %s}}" % CACHE,
            f"members={members}", f"keep_best={keep_best}", "ensemble_series=[gpp, lai, et]"]
    if sets is not None:
        over.append("predictor_sets=" + json.dumps(sets))
    over += list(extra)
    return load_grid(ROOT / "configs" / "experiment_demo.yaml", over)


@pytest.fixture(scope="module")
def finished_grid(exp_store, tmp_path_factory):
    """(dir, result) of the demo grid made small (2 sets x 2 members, best 2 kept), one member
    failing; the end-to-end test and `differland analyze`'s tests read it."""
    from differland_dist.experiment.pipeline import prepare_dir, run_experiment
    from differland_dist.inference.pipeline import InferenceOptions
    from differland_dist.storage.lease import Lease
    from differland_dist.storage.location import Location

    grid = _grid(exp_store, keep_best=2)
    tmp = tmp_path_factory.mktemp("grid")
    out = str(tmp / "exp")
    prepare_dir(grid, out, False)
    # each member also logs to a local MLflow file store (tmp/mlruns) where the [mlflow] extra
    # is installed: test_experiment_logs_one_mlflow_run_per_member reads it
    mlruns = (tmp / "mlruns").as_uri() if importlib.util.find_spec("mlflow") else None
    # another live writer holds one member's run directory: that member must fail alone
    with Lease(Location(str(tmp / "exp" / "members" / "PFT" / "m001")), owner="someone else"), \
            pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks file stores to opt in
        # member inference in this process (the Ray Data path is tested in test_inference.py)
        res = run_experiment(grid, out, resume=True, progress_every_s=5,
                             inference_options=InferenceOptions(executor="local"), mlflow=mlruns)
    return out, res


def test_grid_end_to_end_with_a_failing_member(finished_grid, exp_store):
    from differland_dist.experiment.pipeline import run_experiment
    from differland_dist.storage.lease import Lease
    from differland_dist.storage.location import Location

    out, res = finished_grid
    tmp_path = Path(out).parent
    grid = _grid(exp_store, keep_best=2)
    states = {k: m.state for k, m in res.run.members.items()}
    assert states == {"PFT/m000": "done", "PFT/m001": "failed", "PFT+CLIM+SOIL+AGE/m000": "done",
                      "PFT+CLIM+SOIL+AGE/m001": "done"}
    assert "someone else" in res.run.members["PFT/m001"].error
    assert res.kept["PFT"] == ["PFT/m000"] and len(res.kept["PFT+CLIM+SOIL+AGE"]) == 2
    journal = [json.loads(x) for x in (tmp_path / "exp" / "experiment.jsonl").read_text().splitlines()]
    assert {r["state"] for r in journal if r["key"] == "PFT/m000"} >= {"queued", "waiting", "running", "done"}
    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert summary["failed"][0]["member"] == "PFT/m001"
    # scores: set -> stream -> split -> view -> metric -> {ensemble, member_mean, member_sd}
    scores = json.loads((tmp_path / "exp" / "scores.json").read_text())
    assert set(scores) == {"PFT", "PFT+CLIM+SOIL+AGE"}
    cell = scores["PFT+CLIM+SOIL+AGE"]["lai"]["test"]["flat"]["nse"]
    assert set(cell) >= {"ensemble", "member_mean", "member_sd"} and cell["ensemble"] is not None
    assert cell["member_sd"] > 0  # two kept members that differ
    cell = scores["PFT"]["lai"]["test"]["flat"]["nse"]
    assert cell["member_mean"] == pytest.approx(cell["ensemble"], abs=1e-6)  # one kept member
    for sp in ("train", "dev", "test"):
        for view in ("flat", "spatial"):
            assert set(scores["PFT"]["lai"][sp][view]) >= {"nse", "kge", "r2", "rmse", "mae", "bias", "r"}
    # probabilistic scores of the kept members: the one-member set's CRPS is its MAE (no spread)
    one, two = scores["PFT"]["lai"]["test"]["probabilistic"], scores["PFT+CLIM+SOIL+AGE"]["lai"]["test"]["probabilistic"]
    assert one["members"] == 1 and one["n"] > 0 and one["spread_skill"] is None
    assert one["crps"] == pytest.approx(one["mae"], rel=1e-9)
    assert one["mae"] == pytest.approx(scores["PFT"]["lai"]["test"]["flat"]["mae"]["ensemble"], rel=1e-4)
    assert two["members"] == 2 and two["n"] == one["n"] and 0 < two["crps_spread"]
    assert two["crps"] is not None and two["spread_skill"] > 0 and 0 <= two["coverage_90"] <= 1
    assert "note" in scores["PFT"]["nbe"]["test"]["probabilistic"]  # a patch-level stream
    import differland_dist as dl

    ens = dl.open_ensemble(out)
    assert list(ens["predictor_set"].values) == ["PFT", "PFT+CLIM+SOIL+AGE"]
    assert list(ens["quantile"].values) == [0.05, 0.5, 0.95]
    assert ens["lai"].dims == ("predictor_set", "pixel", "time")
    assert ens["lai_quantile"].dims == ("predictor_set", "quantile", "pixel", "time")
    assert ens["param_LCMA"].attrs["units"] and ens["map_LCMA"].dims[-2:] == ("lat", "lon")
    # dates a year apart are the same date: the members' spread is within half a year
    assert float(ens["param_Bday_sd"].max()) < 182.625 / np.sqrt(2) + 1e-3
    problems = cf_problems(ensemble_sample(ens), str(tmp_path), "ensemble")  # CF 1.8, like every output
    assert unexpected(problems, COMBINED_VIEWS + UWUE) == [], problems
    cube = dl.gridded(ens["lai"].sel(predictor_set="PFT"))
    assert cube.dims == ("time", "lat", "lon") and int(np.isfinite(cube.values[0]).sum()) == ens.sizes["pixel"]
    assert (tmp_path / "exp" / "figures" / "test_nse_lai.png").stat().st_size > 1000
    md = (tmp_path / "exp" / "scores.md").read_text()
    assert md.count("| PFT | test |") == md.count("| PFT | dev |") == len(scores["PFT"])
    # a finished experiment reruns as a no-op for its finished members (the other writer still
    # holds the failed one's directory, so the grid stays as the analyze tests below expect)
    with Lease(Location(str(tmp_path / "exp" / "members" / "PFT" / "m001")), owner="someone else"):
        res2 = run_experiment(grid, out, resume=True, ensemble=False)
    assert res2.run.members["PFT/m000"].state == "done"
    assert res2.run.members["PFT/m001"].state == "failed"


def test_experiment_logs_one_mlflow_run_per_member(finished_grid, monkeypatch):
    """--mlflow: one MLflow run per member trained, named <set>/m<seed>, in the MLflow
    experiment of the grid's name, with the member's config as parameters and its metrics
    (as in its metrics.jsonl) at their steps; the failed member's run is FAILED."""
    pytest.importorskip("mlflow", reason="mlflow (the [mlflow] extra) not installed")
    from mlflow.tracking import MlflowClient

    from differland_dist.experiment import load_experiment, member_config

    out, res = finished_grid
    grid = load_experiment(out)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient((Path(out).parent / "mlruns").as_uri())
    exp = client.get_experiment_by_name(grid.name)
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert sorted(runs) == sorted(res.run.members)
    assert runs["PFT/m001"].info.status == "FAILED"
    for key in ("PFT/m000", "PFT+CLIM+SOIL+AGE/m000", "PFT+CLIM+SOIL+AGE/m001"):
        run = runs[key]
        assert run.info.status == "FINISHED", key
        recs = [json.loads(x) for x in (Path(out) / "members" / key / "metrics.jsonl").read_text().splitlines() if x]
        for split in ("train", "dev"):
            want = {r["step"]: r["loss"] for r in recs if r.get("split", "train") == split}
            got = {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"{split}/loss")}
            assert want and got == pytest.approx(want), (key, split)
        cfg = member_config(grid, {m.key: m for m in grid.members}[key])
        assert run.data.params["data.split_seed"] == str(cfg.data.split_seed)
        assert run.data.params["training.steps"] == str(cfg.training.steps)


def test_experiment_command_exits_1_and_names_the_failed_member(finished_grid, capsys):
    """`differland experiment` fails (exit 1) when any member failed, naming it, though the
    others finished: a batch job must not report success for a partial grid."""
    from differland_dist.cli.main import main
    from differland_dist.experiment.pipeline import CONFIG_NAME
    from differland_dist.storage.lease import Lease
    from differland_dist.storage.location import Location

    out, _ = finished_grid
    # the saved experiment.yaml is the grid itself; the other writer still holds PFT/m001
    with Lease(Location(str(Path(out) / "members" / "PFT" / "m001")), owner="someone else"):
        rc = main(["experiment", str(Path(out) / CONFIG_NAME), "--out", out, "--resume",
                   "--skip-ensemble", "--json", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 1, cap.err
    assert "error: 1 of 4 member(s) failed: PFT/m001" in cap.err
    d = json.loads(cap.out.strip().splitlines()[-1])
    assert [f["member"] for f in d["failed"]] == ["PFT/m001"] and "someone else" in d["failed"][0]["error"]
    assert sorted(d["done"]) == ["PFT+CLIM+SOIL+AGE/m000", "PFT+CLIM+SOIL+AGE/m001", "PFT/m000"]


# -- differland analyze end to end, on the grid above ------------------------------------------------
PARAMS = ["f_gpp", "canopy_efficiency", "LCMA", "field_capacity", "init_som", "Bday"]


SMALL_SHAP = ["--shap-pixels", "16", "--shap-background", "8", "--shap-nsamples", "64",
              "--shap-chunk", "8", "--partition-iterations", "30"]


def test_analyze_writes_every_analysis_and_the_truth_check(finished_grid, capsys):
    from differland_dist.cli.main import main

    experiment, _ = finished_grid
    assert main(["analyze", experiment, "--params", *PARAMS, *SMALL_SHAP]) == 0
    printed = capsys.readouterr().out
    an = Path(experiment) / "analysis"
    assert "median pft_share" in printed and f"analysis: {experiment}/analysis" in printed
    for f in ("generalisation.json", "variance_partition.json", "gradients.json", "shap.json",
              "uncertainty.json", "identifiability.json", "truth_check.json", "summary.json",
              "report.md"):
        assert (an / f).stat().st_size > 100, f
    vp = json.loads((an / "variance_partition.json").read_text())
    assert list(vp["parameters"]) == PARAMS and "truth" in vp
    for v in vp["parameters"].values():
        assert set(v) >= {"r2_all", "r2_PFT", "r2_CLIM", "r2_SOIL", "r2_AGE", "pft_share", "direct_share"}
    gr = json.loads((an / "gradients.json").read_text())
    assert abs(sum(gr["explained"]) - 1) < 1e-6 and len(gr["truth_cosines_all"]) == 3
    assert set(gr["components"]["PC1"]["predictor_r"]) >= {"MAT", "SAND", "EBF", "forest_age"}
    sh = json.loads((an / "shap.json").read_text())
    assert sh["members"] == 2 and sh["pixels"] == 16 and sh["executor"] == "ray"
    assert sh["features"][-1] == "lat" and set(sh["truth_mean_abs"]) == set(PARAMS)
    import xarray as xr

    z = xr.open_zarr(an / "shap.zarr", zarr_format=3, consolidated=False)
    assert z["shap"].shape == (2, 16, len(sh["features"]), len(PARAMS)) and "shap_truth" in z
    g = xr.open_zarr(an / "gradients.zarr", zarr_format=3, consolidated=False)
    assert g["loadings"].shape == (len(PARAMS), len(PARAMS)) and g["scores"].dims == ("pixel", "component")
    tc = json.loads((an / "truth_check.json").read_text())
    names = [c["name"] for c in tc["criteria"]]
    assert any(n.startswith("pft_share") for n in names) and any(n.startswith("PCA") for n in names)
    assert sum(n.startswith("generalisation") for n in names) == 3
    gj = json.loads((an / "generalisation.json").read_text())
    assert gj["view"] == "flat" and gj["spatial"]["view"] == "spatial" and "lai" in gj["spatial"]["streams"]
    assert all("(flat)" in c["name"] and "spatial_diff" in c for c in tc["criteria"]
               if c["name"].startswith("generalisation"))
    for c in tc["criteria"]:
        assert set(c) >= {"name", "value", "threshold", "passed"} and isinstance(c["passed"], bool)
        if c["name"].startswith("PCA") and c["value"] is not None:
            assert c["passed"] == (c["value"] >= 0.8) and len(c["parameters"]) >= 3
        if c["value"] is None:
            assert c["passed"] is False  # nothing to compare never passes
    idf = json.loads((an / "identifiability.json").read_text())
    assert idf["pixels"] in ("test", "dev+test") and set(idf["parameters"]) == set(PARAMS)
    assert tc["identifiable"] == idf["identifiable"]
    md = (an / "report.md").read_text()
    assert "trusted: median pft_share" in printed
    summ = json.loads((an / "summary.json").read_text())
    assert summ["intervals"]["n"] == 20 and summ["init"]["head_init_scale"]
    assert set(summ["findings"]["shares"]) == set(PARAMS)
    assert "head_init_scale" in md and "## Findings" in md and "bootstrap over 20 resamples" in md
    for head in ("## Generalisation", "## PFTs versus environment", "## Parameter gradients",
                 "## What drives each parameter (SHAP)", "## Uncertainty", "## Identifiability",
                 "## Checks against the truth"):
        assert head in md
    import re

    rows = [r for r in md.split("## Checks against the truth")[1].splitlines() if r.startswith("| ")]
    assert len(rows) == 1 + len(tc["criteria"])  # header + one row per criterion
    assert all(len(re.findall(r"(?<!\\)\|", r)) == 5 for r in rows)  # four cells: bars in names escaped
    for fig in ("variance_partition", "pca_loadings", "pca_scores", "shap_importance", "uncertainty",
                "generalisation"):
        assert (an / "figures" / f"{fig}.png").stat().st_size > 2000 and f"figures/{fig}.png" in md
    # a rerun replaces what the analysis wrote (ownership marker), and refuses foreign files
    (an / "notes.txt").write_text("mine")
    assert main(["analyze", experiment, "--params", *PARAMS, *SMALL_SHAP, "--local"]) == 1
    assert "notes.txt" in capsys.readouterr().err
    (an / "notes.txt").unlink()


def test_analyze_rejects_bad_input_before_work(finished_grid, capsys, tmp_path):
    from differland_dist.cli.main import main

    experiment, _ = finished_grid
    assert main(["analyze", experiment, "--params", "f_gpp", "nope", "LCMA"]) == 1
    assert "--params ['nope']: unknown parameter" in capsys.readouterr().err
    assert main(["analyze", experiment, "--sets", "CLIM", "--out", str(tmp_path / "a")]) == 1
    assert "--sets ['CLIM']: not in the experiment" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "a")]) == 1
    assert "not an experiment directory" in capsys.readouterr().err


def test_analyze_paper_shap_recipe(finished_grid, tmp_path):
    """--shap-recipe paper adds shap_paper.json: the ensemble's physical and derived targets
    explained on train/dev pixels only, the reference defects fixed; a bad recipe is refused."""
    from differland_dist.analysis import shap_paper as SP
    from differland_dist.analysis.pipeline import run_analysis
    from differland_dist.analysis.shap_values import ShapOptions
    from differland_dist.errors import DifferlandError

    experiment, _ = finished_grid
    with pytest.raises(DifferlandError, match="--shap-recipe"):
        run_analysis(experiment, str(tmp_path / "x"), shap_recipe="nope")
    out = tmp_path / "a"
    s = run_analysis(experiment, str(out), params=PARAMS[:4], figures=False, partition_max_iter=20,
                     shap=ShapOptions(pixels=8, background=6, nsamples=48, executor="local"),
                     shap_recipe="paper", paper_shap={"pixels": 6, "background": 3, "nsamples": 40})
    sp = json.loads((out / "shap_paper.json").read_text())
    assert sp == s["shap_paper"] and sp["defects"] == {"pft_mask": False, "flab": False, "raw_lat": False}
    u = sp["unconditional"]
    assert u["pixels"] == 6 and u["background"] == 3 and "wood_allocation" in u["top"]
    assert set(u["mean_abs"]["Q10_cal"]) == set(u["features"]) and u["features"][-1] == "lat"
    assert len(sp["members"]) == 2
    assert all(v["share_of_pft"] == 1.0 for v in sp["pft_conditional"].values())
    assert SP.RECIPES == ("members", "paper")


def test_analyze_on_object_storage(finished_grid, gcs_emulator):  # noqa: F811
    import fsspec

    from differland_dist.analysis.pipeline import run_analysis
    from differland_dist.analysis.shap_values import ShapOptions
    from differland_dist.storage.location import Location

    experiment, _ = finished_grid
    so = gcs_emulator["storage_options"]
    url = f"{gcs_emulator['url_prefix']}/{uuid.uuid4().hex}/exp"
    fs = fsspec.filesystem("gs", **so)
    fs.put(experiment, url.removeprefix("gs://"), recursive=True)
    s = run_analysis(Location(url, so), params=PARAMS[:4], figures=False, partition_max_iter=20,
                     shap=ShapOptions(pixels=8, background=6, nsamples=48, executor="local"))
    tc = json.loads(fs.cat_file(f"{url.removeprefix('gs://')}/analysis/truth_check.json"))
    assert tc == s["truth_check"]
    assert fs.exists(f"{url.removeprefix('gs://')}/analysis/shap.zarr/zarr.json")
    assert "figures/pca_scores.png" not in s["files"] and "report.md" in s["files"]
    assert fs.exists(f"{url.removeprefix('gs://')}/analysis/report.md")


def test_killed_driver_resumes_to_identical_members(exp_store, finished_grid, tmp_path):
    """Kill the experiment driver (and its local Ray) mid-run; --resume gives the same
    member networks as an uninterrupted experiment (the finished grid's members of that set:
    a member's config does not depend on the rest of the grid)."""
    from differland_dist.storage import checkpoint

    sets = [["PFT", "CLIM", "SOIL", "AGE"]]
    ref, _ = finished_grid

    cfg = tmp_path / "exp.yaml"
    import yaml

    grid = _grid(exp_store, sets)
    d = grid.to_dict()
    cfg.write_text(yaml.safe_dump(d))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "differland_dist.cli.main", "experiment", str(cfg), "--out",
           str(out), "--skip-ensemble"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 300
    latest = out / "members" / "PFT+CLIM+SOIL+AGE" / "m000" / "checkpoints" / "latest.json"
    while time.time() < deadline:
        if latest.exists() and json.loads(latest.read_text())["step"] >= 4:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "members" / "PFT+CLIM+SOIL+AGE" / "m001" / "network.npz").exists() or \
        not (out / "members" / "PFT+CLIM+SOIL+AGE" / "m000" / "network.npz").exists()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "lease" in r.stderr  # the killed driver's lease: not taken silently
    r = subprocess.run(cmd + ["--resume", "--force"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for m in ("m000", "m001"):
        a, _ = checkpoint.load(Location(str(Path(ref) / "members" / "PFT+CLIM+SOIL+AGE" / m / "network.npz")))
        b, _ = checkpoint.load(Location(str(out / "members" / "PFT+CLIM+SOIL+AGE" / m / "network.npz")))
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), (m, k)
