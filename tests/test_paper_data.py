"""The paper's own data and network, end to end (issue 16), on a generated driver set in the
exact published layout (tests/paper_driver.py: 0.25 degree, the real land mask, percent PFTs,
100 runs with fixed negative test cells, the predictor statistics CSVs).

import -> validate -> data.run splits -> the published run-1 network as a complete checkpoint
-> infer (its parameters at the golden predictors are the golden ones) -> evaluate, and a few
calibration steps of configs/paper_global.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from differland_dist.cli.main import main
from differland_dist.config import DataConfig, load_config
from differland_dist.data import splits
from differland_dist.data.importers import netcdf as nc
from differland_dist.data.store import open_store
from differland_dist.errors import ConfigError, DataValidationError
from paper_driver import PFT, write_paper_driver

ROOT = Path(__file__).resolve().parents[1]
PICKLE = "dalec993_PFT+CLIM+SOIL+AGE_run_1.pickle"
MONTHS = 12


@pytest.fixture(scope="module")
def paper(tmp_path_factory, golden_monthly):
    d = tmp_path_factory.mktemp("paper_driver")
    facts = write_paper_driver(d, n_months=MONTHS, golden=golden_monthly["net_predictors"])
    url = str(tmp_path_factory.mktemp("paper_store") / "paper.zarr")
    assert main(["import-netcdf", "--data-dir", str(d), "--out", url]) == 0
    return d, facts, url


def test_import_keeps_test_cells_percent_and_all_runs(paper):
    d, facts, url = paper
    assert main(["validate", url]) == 0
    store = open_store(url)
    ds = store.ds
    rows, cols = ds["row"].values, ds["col"].values
    flat = rows * 1440 + cols
    idx1 = facts["index"][0].ravel()[flat]
    # 1. every valid land cell is in the store, the negative ones as test (split 2)
    assert store.n_pixels == int(facts["valid"].sum())
    assert np.array_equal(ds["split"].values == splits.TEST, idx1 < 0) and (idx1 < 0).any()
    thr = int(np.round(idx1[idx1 >= 0].max() * 0.9))
    assert np.array_equal(ds["split"].values, splits.run_split_codes(idx1, thr))
    assert len(store.train_patches) and len(store.dev_patches) and len(store.test_patches)
    assert store.attrs[splits.CONVENTION_ATTR] == splits.CONVENTION
    # 2. percent PFTs: stored as fractions, the source recorded
    assert store.attrs["pft_units_source"] == "percent"
    with xr.open_dataset(d / nc.DRIVER_FILE) as src:
        for n in PFT:
            np.testing.assert_allclose(ds[n].values, src[n].values.ravel()[flat] / 100, rtol=1e-6)
    assert ds["NF"].values.max() <= 1 and ds["NF"].values.max() > 0.5
    # 3. one import, every run: the (pixel, run) table; data.run picks a run's split at open time
    table = ds[splits.RUN_TABLE_VAR].values
    assert table.shape == (store.n_pixels, 100)
    np.testing.assert_array_equal(table, facts["index"].reshape(100, -1)[:, flat].T)
    written = store.patch_split
    for a, b in zip(store.run_split(1), written):
        np.testing.assert_array_equal(a, b)
    idx7 = table[:, 6]
    thr7 = int(np.round(idx7[idx7 >= 0].max() * 0.9))
    codes7 = splits.pixel_codes(store.patch, splits.of_data(store, DataConfig(url=url, run=7)))
    assert np.array_equal(codes7, splits.run_split_codes(idx7, thr7))
    assert not np.array_equal(codes7, ds["split"].values)  # another partition, same test cells
    assert np.array_equal(codes7 == splits.TEST, ds["split"].values == splits.TEST)
    redrawn = splits.of_data(store, DataConfig(url=url, run=7, split_seed=3))
    np.testing.assert_array_equal(redrawn.test, written.test)
    with pytest.raises(ConfigError, match=r"data\.run: .* holds runs 1\.\.100, got 101"):
        splits.of_data(store, DataConfig(url=url, run=101))
    with pytest.raises(ConfigError, match="data.run"):
        DataConfig(run=0)


def test_percent_pft_detection(tmp_path):
    """Percent by the units attribute and by the value range; disagreeing units refused."""
    from test_importers import make_global_files

    d = tmp_path / "f"
    truth = make_global_files(d)
    base = nc.import_netcdf(nc.Inputs.in_dir(d), max_patch_size=4)
    assert base.attrs["pft_units_source"] == "fraction"
    path = d / nc.DRIVER_FILE
    with xr.open_dataset(path) as src:
        ds = src.load()
    for n in PFT:  # percent without a units attribute: judged from the values
        ds[n] = ds[n] * 100
    ds.to_netcdf(path)
    pct = nc.import_netcdf(nc.Inputs.in_dir(d), max_patch_size=4)
    assert pct.attrs["pft_units_source"] == "percent"
    for n in PFT:
        np.testing.assert_allclose(pct[n].values, base[n].values, rtol=1e-6)
    ds["NF"].attrs["units"] = "%"
    ds["DBF"].attrs["units"] = "1"
    ds.to_netcdf(path)
    with pytest.raises(DataValidationError, match=r"PFT predictors disagree on their units"):
        nc.import_netcdf(nc.Inputs.in_dir(d), max_patch_size=4)
    assert truth["idx"].shape[0] == 3


def test_published_network_infer_evaluate_calibrate(paper, shared_dir, golden_monthly, tmp_path, capsys):
    d, facts, url = paper
    ckpt = str(tmp_path / "published.npz")
    pickle = str(shared_dir / "data" / "published_network" / PICKLE)
    # without the statistics: the network alone, which infer refuses with a clear message
    assert main(["import-checkpoint", pickle, "--out", str(tmp_path / "bare.npz")]) == 0
    rc = main(["infer", "--checkpoint", str(tmp_path / "bare.npz"), "--store", url, "--out",
               str(tmp_path / "bare.zarr"), "--executor", "local"])
    assert rc == 1 and "standardisation" in capsys.readouterr().err
    # 4. with the published CSVs: a complete checkpoint
    assert main(["import-checkpoint", pickle, "--out", ckpt, "--run", "1", "--store", url,
                 "--mean-csv", str(d / "predictor_mean_df_v6.csv"),
                 "--std-csv", str(d / "predictor_std_df_v6.csv")]) == 0
    assert "CSV row 0" in capsys.readouterr().out
    out = str(tmp_path / "published.zarr")
    assert main(["infer", "--checkpoint", ckpt, "--store", url, "--out", out,
                 "--executor", "local", "--series", "gpp,lai,nbe", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["complete"] is True and summary["n_pixels"] == int(facts["valid"].sum())
    res = xr.open_zarr(out, decode_times=False)
    store = open_store(url)
    flat = store.ds["row"].values * 1440 + store.ds["col"].values
    where = {int(c): i for i, c in enumerate(flat)}
    px = np.array([where[int(c)] for c in facts["golden_cells"]])
    pos = np.array([int(np.flatnonzero(res["pixel"].values == p)[0]) if "pixel" in res.coords
                    else p for p in px])
    g = golden_monthly
    from differland_dist.vocabulary.parameters import PARAMETERS

    names = [p.output_name for p in PARAMETERS]
    dalec = np.stack([res[f"param_{n}"].values[pos] for n in names[:31]], axis=1)
    pools = np.stack([res[f"param_{n}"].values[pos] for n in names[33:]], axis=1)
    # the published run-1 network, standardised with the CSV row of run 1 (PFT stats / 100):
    # the golden predictors give the golden parameters
    np.testing.assert_allclose(dalec, g["net_dalec_params"], rtol=2e-4)
    np.testing.assert_allclose(pools, g["net_initial_pools"], rtol=2e-4)
    assert np.isfinite(res["gpp"].values).all()
    # evaluate the published network's output: train, dev and test pixels all scored
    ev = tmp_path / "evaluation"
    assert main(["evaluate", out, "--out", str(ev), "--no-figures"]) == 0
    report = json.loads((ev / "evaluation.json").read_text())
    text = json.dumps(report)
    assert "test" in text and "dev" in text
    # 6. the paper config calibrates on the store (a few steps, run 3's partition)
    cfg = load_config(ROOT / "configs" / "paper_global.yaml",
                      [f"data.url={url}", "data.run=3", "training.epochs=null",  # 2 steps, not epochs
                       "training.steps=2", "training.eval_every=2",
                       "training.checkpoint_every=2", "ray.workers=1"])
    assert cfg.optimizer.learning_rate == 5e-5 and cfg.training.patches_per_step == 1
    assert cfg.loss.parity and not cfg.model.closed_budget
    from differland_dist.distributed.trainer import calibrate

    state, _ = calibrate(cfg, str(tmp_path / "run"))
    assert state.step == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(np.isfinite(x.get("loss", np.nan)) for x in lines)


def test_reproduction_recipe_at_small_size(paper, tmp_path):
    """docs/paper.md's reproduction recipe on the generated driver: the paper's grid
    (configs/experiment_paper.yaml: runs as members, one epoch of every training patch in a
    fixed order, the best member by training loss), then evaluate --conventions paper and
    analyze --shap-recipe paper, with small sizes."""
    from differland_dist.experiment.grid import load_grid, member_config
    from differland_dist.experiment.pipeline import prepare_dir, run_experiment
    from differland_dist.inference.pipeline import InferenceOptions

    _, _, url = paper
    n_train = {r: len(splits.of_data(open_store(url), DataConfig(url=url, run=r)).train) for r in (1, 2)}
    grid = load_grid(ROOT / "configs" / "experiment_paper.yaml", [
        f"base.data.url={url}", "base.ray.address=local", "base.training.epochs=1",
        "base.training.eval_every=1", "base.training.checkpoint_every=1",
        "predictor_sets=[[PFT, CLIM, SOIL, AGE], [PFT]]", "members=2", "keep_best=1",
        "resources={workers: 1, cpus_per_worker: 1, gpus_per_worker: 0}",
        "ensemble_series=[gpp, lai]"])
    assert [member_config(grid, m).data.run for m in grid.members[:2]] == [1, 2]
    out = str(tmp_path / "exp")
    prepare_dir(grid, out, False)
    res = run_experiment(grid, out, resume=True, inference_options=InferenceOptions(executor="local"))
    assert not res.run.failed
    sel = json.loads((tmp_path / "exp" / "selection.json").read_text())
    full = sel["PFT+CLIM+SOIL+AGE"]
    assert full["keep_by"] == "train_loss" and len(full["kept"]) == 1
    losses = full["train_loss"]
    assert losses[full["kept"][0]] == min(losses.values())   # the better converged run kept
    # every member trained one epoch of its own run: each training patch once
    for seed in (0, 1):
        recs = [json.loads(x) for x in (tmp_path / "exp" / "members" / "PFT+CLIM+SOIL+AGE" /
                                        f"m{seed:03d}" / "metrics.jsonl").read_text().splitlines()]
        train = [m for m in recs if m["split"] == "train"]
        assert len(train) == n_train[seed + 1] and {m["epoch"] for m in train} == {1}
    # evaluate the kept member with the reference's conventions (12 months: no warm-up)
    member = tmp_path / "exp" / "members" / full["kept"][0]
    from differland_dist.evaluation.evaluate import EvaluationOptions, evaluate

    pc = evaluate(str(member / "inference.zarr"), out=str(tmp_path / "ev"),
                  options=EvaluationOptions(figures=False, conventions="paper", paper_warm_up=0)
                  )["paper_conventions"]
    ref = pc["streams"]["lai"]["train"]["reference"]
    assert "spatial_nse" in ref and np.isfinite(ref["flat_nse"])
    assert "flat_nse" in pc["streams"]["agb"]["train"]["reference"]   # biomass: one whole year
