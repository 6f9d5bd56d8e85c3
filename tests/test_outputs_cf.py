"""Outputs a carbon-cycle scientist can use: CF conventions checked by a CF checker, KGE,
global annual totals and zonal means against hand-computed values, skill maps, streamed
netCDF export, TensorBoard tracking of a real calibration."""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import pytest
from ray_session import ray_session
import xarray as xr

from cf_check import COMBINED_VIEWS, UWUE, cf_problems, unexpected
from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

from differland_dist.evaluation import carbon as C
from differland_dist.evaluation import metrics as M
from differland_dist.vocabulary.grid import EARTH_RADIUS_M, cell_bounds, row_areas
from differland_dist.vocabulary.parameters import PARAMETERS
from differland_dist.vocabulary.series import SERIES, param_var
from differland_dist.vocabulary.cf import series_attrs
from differland_dist.vocabulary.units import udunits

WARM_UP = 3
#: The one parameter whose units UDUNITS cannot express: gC hPa^0.5 kgH2O-1 (half power).
NO_UDUNITS = {"param_uWUE", "map_uWUE"}


def _cf_units():
    return pytest.importorskip("cf_units", reason="cf-units (with compliance-checker) not installed")


def _std_names() -> dict[str, str]:
    """CF standard name -> canonical units, from the table compliance-checker ships."""
    import xml.etree.ElementTree as ET
    from importlib.resources import files

    pytest.importorskip("compliance_checker", reason="compliance-checker not installed")
    root = ET.parse(str(files("compliance_checker") / "data" / "cf-standard-name-table.xml")).getroot()
    return {e.get("id"): e.findtext("canonical_units") or "1" for e in root.iter("entry")}


# -- units and names, without running anything ------------------------------------------------------
def test_units_are_udunits_and_standard_names_fit():
    cf_units = _cf_units()
    table = _std_names()
    attrs = {s.name: series_attrs(s, True) for s in SERIES}
    attrs.update({param_var(b.output_name): {"units": udunits(b.units)} for b in PARAMETERS})
    for name, a in attrs.items():
        if name in NO_UDUNITS:
            with pytest.raises(ValueError):  # deliberately not parseable (never misconverted)
                cf_units.Unit(a["units"])
            continue
        u = cf_units.Unit(a["units"])  # raises if UDUNITS does not know it
        sn = a.get("standard_name")
        if sn:
            assert sn in table, (name, sn)
            assert u.is_convertible(cf_units.Unit(table[sn])), (name, a["units"], table[sn])
    assert attrs["gpp"]["units"] == "g m-2 d-1"
    assert attrs["sif"]["units"] == "mW m-2 nm-1 sr-1"
    assert attrs["param_sif_alpha"]["units"] == "g m-2 d-1 (mW m-2 nm-1 sr-1)-1"
    # 1 g m-2 d-1 = 1e-3 / 86400 kg m-2 s-1 (the canonical units of GPP)
    assert cf_units.Unit("g m-2 d-1").convert(1.0, cf_units.Unit("kg m-2 s-1")) == pytest.approx(1e-3 / 86400)


def test_cell_areas_hand_computed():
    R = EARTH_RADIUS_M
    lat = np.array([82.5, 67.5, -82.5])  # 15 degree rows, north first
    a = row_areas(lat, 15.0)
    d = math.radians(15.0)
    want0 = R * R * d * (math.sin(math.radians(90)) - math.sin(math.radians(75)))
    want1 = R * R * d * (math.sin(math.radians(75)) - math.sin(math.radians(60)))
    np.testing.assert_allclose(a, [want0, want1, want0], rtol=1e-12)
    full = row_areas(np.arange(87.5, -90, -5.0), 5.0).sum() * 72  # whole sphere
    assert full == pytest.approx(4 * math.pi * R * R, rel=1e-12)
    np.testing.assert_allclose(cell_bounds(np.array([87.5, 82.5]), 5.0, -90, 90),
                               [[90, 85], [85, 80]])


# -- metrics ----------------------------------------------------------------------------------------
def test_kge_hand_computed():
    o = np.array([0.0, 1.0, 2.0, 3.0])
    s = np.array([0.0, 2.0, 2.0, 4.0])
    # r = 6 / sqrt(40); alpha = sqrt(8 / 5) (population sds); beta = 2 / 1.5
    r, alpha, beta = 6 / math.sqrt(40), math.sqrt(8 / 5), 2 / 1.5
    want = 1 - math.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2)
    assert M.scores(o, s)["kge"] == pytest.approx(want)
    assert M.scores(o, o)["kge"] == pytest.approx(1.0)
    assert M.scores(o, 2 * o)["kge"] == pytest.approx(1 - math.sqrt(2))  # alpha = beta = 2
    rows = M.row_scores(np.stack([o, o]), np.stack([s, o]))
    np.testing.assert_allclose(rows["kge"], [want, 1.0])
    assert math.isnan(M.scores([1.0, 1.0], [1.0, 2.0])["kge"])  # constant obs: r undefined
    assert math.isnan(M.scores([-1.0, 1.0], [0.0, 1.0])["kge"])  # mean obs 0: beta undefined


def test_global_totals_and_zonal_means_hand_computed():
    # two pixels, two years of 12 steps; constant rates
    spy, T = 12, 24
    days = np.array(([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] * 2), np.float64)
    area = np.array([1e12, 3e12])  # m2
    gpp = np.array([[2.0] * T, [4.0] * T])  # g m-2 d-1
    gpp[1, 12:] = 1.0
    acc = C.GlobalTotals(["gpp"], T)
    acc.add({"gpp": gpp[:1]}, area[:1])  # two blocks
    acc.add({"gpp": gpp[1:]}, area[1:])
    got = acc.result(days, spy)["gpp"]
    # year 1: (2 * 1e12 + 4 * 3e12) g d-1 * 365 d = 14e12 * 365 g = 5.11 Pg
    # year 2: (2 * 1e12 + 1 * 3e12) * 365 = 1.825 Pg
    np.testing.assert_allclose(got, [14e12 * 365 / 1e15, 5e12 * 365 / 1e15])
    assert C.step_days(None, 24, 12)[0] == pytest.approx(365.25 / 12)
    z = C.ZonalMeans(["gpp"], 3)
    z.add({"gpp": np.array([[1.0, 3.0], [10.0, 10.0], [4.0, 4.0]])}, np.array([1.0, 3.0, 2.0]),
          np.array([0, 0, 2]))
    # row 0: (1 * mean(1, 3) + 3 * 10) / 4 = 8; row 1: no pixels; row 2: 4
    np.testing.assert_allclose(z.result()["gpp"], [8.0, np.nan, 4.0])


# -- an output, its export and its evaluation -------------------------------------------------------
@pytest.fixture(scope="module")
def nc_output(small_store_url, tmp_path_factory):  # noqa: F811
    """A complete output of the small store with its netCDF export, exported in many small
    blocks (the streaming path: 5 pixels' values per block at most)."""
    from differland_dist.inference import export
    from random_checkpoint import random_checkpoint
    from differland_dist.inference.pipeline import InferenceOptions, run_inference

    d = tmp_path_factory.mktemp("cf")
    ckpt = random_checkpoint(small_store_url, str(d / "net.npz"), config={"loss": {"warm_up": WARM_UP}})
    old = export.BLOCK_VALUES
    export.BLOCK_VALUES = 5 * 24
    try:
        r = run_inference(ckpt, str(d / "nc"), small_store_url,
                          options=InferenceOptions(executor="local", chunk_pixels=8), netcdf=True)
    finally:
        export.BLOCK_VALUES = old
    assert r.complete
    return str(d / "nc"), r.out


def test_netcdf_files_pass_the_cf_checker(nc_output, tmp_path):
    """IOOS compliance-checker, CF 1.8: no error and no warning except the one parameter
    without UDUNITS form; grid_mapping, bounds and cell areas resolve; values equal the zarr."""
    pytest.importorskip("compliance_checker", reason="compliance-checker not installed")
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    out, zarr_url = nc_output
    CheckSuite.load_all_available_checkers()
    for name in ("parameters.nc", "series.nc", "maps.nc"):
        path = os.path.join(out, name)
        report = str(tmp_path / f"{name}.json")
        ComplianceChecker.run_checker(path, ["cf:1.8"], verbose=0, criteria="normal",
                                      output_filename=report, output_format=["json"])
        with open(report) as f:
            res = json.load(f)["cf:1.8"]
        problems = [m for prio in ("high_priorities", "medium_priorities")
                    for item in res[prio] for m in item["msgs"]]
        expected = [m for m in problems if "uWUE" in m and "UDUNITS" in m]
        assert problems == expected, (name, problems)
        assert len(expected) == (0 if name == "series.nc" else 1), name
    z = xr.open_zarr(zarr_url, zarr_format=3, consolidated=True)
    with xr.open_dataset(os.path.join(out, "maps.nc")) as m, \
            xr.open_dataset(os.path.join(out, "series.nc")) as s:
        assert m.crs.attrs["grid_mapping_name"] == "latitude_longitude"
        assert m.map_f_gpp.attrs["grid_mapping"] == "crs"
        assert m.map_f_gpp.attrs["cell_measures"] == "area: cell_area"
        assert m.lat.attrs["bounds"] == "lat_bnds" and m.lat_bnds.shape == (m.lat.size, 2)
        R = EARTH_RADIUS_M
        assert float(m.cell_area.sum()) == pytest.approx(4 * math.pi * R * R, rel=1e-6)
        assert s.gpp.attrs["standard_name"] == "gross_primary_productivity_of_biomass_expressed_as_carbon"
        assert s.gpp.attrs["cell_measures"] == "area: pixel_area" and "pixel_lat" in s.gpp.coords
        assert s.time_bnds.shape == (s.time.size, 2)
        np.testing.assert_array_equal(s.pixel_area.values, m.cell_area.values[s.row.values, s.col.values])
        for v in ("gpp", "pool_som", "lai"):
            np.testing.assert_array_equal(s[v].values, z[v].values, err_msg=v)
        np.testing.assert_array_equal(m.map_LCMA.values, z.map_LCMA.values)


def test_inference_zarr_passes_the_cf_checker(nc_output, tmp_path):
    """The zarr output itself (not only its export): nothing but the messages that a store
    holding both the gridded and the gathered view cannot avoid, and uWUE's unit."""
    _, zarr_url = nc_output
    z = xr.open_zarr(zarr_url, zarr_format=3, consolidated=True)
    problems = cf_problems(z, str(tmp_path), "inference")
    assert unexpected(problems, COMBINED_VIEWS + UWUE) == [], problems
    assert any("uWUE" in m for m in problems)  # the allowance is used, not a blanket pass


def test_evaluate_totals_zonal_means_and_skill_maps(nc_output, small_ds, tmp_path):  # noqa: F811
    from differland_dist.evaluation.evaluate import EvaluationOptions, evaluate
    from differland_dist.evaluation.streams import RULES, comparable

    _, zarr_url = nc_output
    r = evaluate(zarr_url, out=str(tmp_path / "ev"),
                 options=EvaluationOptions(n_series_pixels=0, map_params=("f_gpp",), block_pixels=16))
    z = xr.open_zarr(zarr_url, zarr_format=3, consolidated=True)
    # totals, recomputed here from the stored series, areas and bounds (xarray, not the code)
    days = small_ds["delta_t"].values.astype(np.float64)  # the input store's step lengths
    gt = r["global_totals"]
    assert gt["units"] == "PgC yr-1" and gt["years"] == [2001, 2002]
    for name in ("gpp", "nee", "nbe", "fire"):
        g = (z[name].values.astype(np.float64) * z.pixel_area.values[:, None]).sum(0) * days
        want = g.reshape(2, 12).sum(1) / 1e15
        np.testing.assert_allclose(gt["annual"][name], want, rtol=1e-9, err_msg=name)
        assert gt["mean_after_warm_up"][name] == pytest.approx(want[1])  # year 1 holds warm-up
    assert gt["land_area_m2"] == pytest.approx(float(z.pixel_area.sum()))
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert saved["global_totals"]["annual"]["gpp"] == pytest.approx(gt["annual"]["gpp"])
    md = (tmp_path / "ev" / "evaluation.md").read_text()
    assert "Global annual totals" in md and "| KGE |" in md
    p = xr.open_zarr(str(tmp_path / "ev" / "evaluation.zarr"), zarr_format=3, consolidated=True)
    # zonal mean of gpp: area-weighted mean of the pixels' post-warm-up time means, per row
    tm = z.gpp.values[:, WARM_UP:].astype(np.float64).mean(1)
    a = z.pixel_area.values
    for row in np.unique(z.row.values):
        sel = z.row.values == row
        assert float(p.zonal_gpp[row]) == pytest.approx((tm[sel] * a[sel]).sum() / a[sel].sum(), rel=1e-5)
    # skill map of lai at each pixel = the metrics of that pixel's own comparison
    w = small_ds["obs_lai_weight"].values[:, WARM_UP:]
    o = np.where(w > 0, small_ds["obs_lai"].values[:, WARM_UP:], np.nan)
    sim = z.lai.values[:, WARM_UP:].astype(np.float64)
    oo, ss, mm = comparable(RULES["lai"], o, w, sim, 12)
    rows = M.row_scores(oo, ss, mm)
    rr, cc = z.row.values, z.col.values
    for k in ("nse", "kge", "r", "bias"):
        got = p[f"lai_{k}"].values[rr, cc]
        want = np.where(rows["n"] >= (1 if k == "bias" else 3), rows[k], np.nan)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=k)
    assert np.isnan(p.lai_nse.values).sum() >= p.lai_nse.size - small_ds.sizes["pixel"]
    assert p.lai_nse.attrs["grid_mapping"] == "crs" and "nbe_nse" not in p  # patch stream: no map
    figs = set(r["figures"])
    assert {"figures/skill_lai.png", "figures/zonal_means.png", "figures/global_totals.png"} <= figs
    for f in ("skill_lai.png", "zonal_means.png", "global_totals.png"):
        assert (tmp_path / "ev" / "figures" / f).read_bytes()[:4] == b"\x89PNG"
    assert p.attrs["differland_version"] and "differland_git_commit" in p.attrs  # provenance
    # the skill-map store passes the CF checker like every other output
    assert unexpected(cf_problems(p, str(tmp_path), "evaluation"), ()) == []
    # a second evaluation replaces its own products store
    evaluate(zarr_url, out=str(tmp_path / "ev"), options=EvaluationOptions(figures=False))
    assert (tmp_path / "ev" / "evaluation.zarr" / "lai_nse").exists()


# -- TensorBoard ------------------------------------------------------------------------------------
def _read_scalars(logdir: str) -> dict[str, dict[int, float]]:
    """tag -> step -> value from the TFRecord event files (length, crc, payload, crc)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    for fn in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, fn), "rb") as f:
            data = f.read()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            ev = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, {})[int(ev.step)] = float(v.simple_value)
    return out


def test_tensorboard_and_mlflow_hooks_log_a_real_calibration(small_store_url, tmp_path,  # noqa: F811
                                                              monkeypatch):
    pytest.importorskip("tensorboardX", reason="tensorboardX (the [tracking] extra) not installed")
    from differland_dist.config import load_config
    from differland_dist.distributed.trainer import calibrate
    from differland_dist.distributed.tracking import TensorBoardHook

    cfg = load_config(None, [f"data.url={small_store_url}", "training.steps=3",
                             "training.patches_per_step=4", "training.eval_every=2",
                             "training.checkpoint_every=3", "ray.workers=1"])
    # the [mlflow] hook on the same calibration, into a local MLflow file store
    from mlflow.tracking import MlflowClient

    from differland_dist.distributed.tracking import MLflowHook

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks file stores to opt in
    uri = (tmp_path / "mlruns").as_uri()
    with ray_session(num_cpus=2), TensorBoardHook(str(tmp_path / "tb")) as hook, \
            MLflowHook(uri, "tests", run_name="run") as ml:
        calibrate(cfg, str(tmp_path / "run"), hooks=[hook, ml])
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if x]
    got = _read_scalars(str(tmp_path / "tb"))
    train = {r["step"]: r["loss"] for r in recs if r.get("split", "train") == "train"}
    test = {r["step"]: r["loss"] for r in recs if r.get("split") == "dev"}
    assert sorted(train) == [1, 2, 3] and test
    assert got["train/loss"] == pytest.approx(train)
    assert got["dev/loss"] == pytest.approx(test)  # the final dev record too (close)
    assert any(t.startswith("train/") and t != "train/loss" for t in got)  # loss terms
    client = MlflowClient(uri)
    run = client.get_run(ml.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    hist = {m.step: m.value for m in client.get_metric_history(ml.run_id, "train/loss")}
    assert hist == pytest.approx(train)
    assert {m.step: m.value for m in client.get_metric_history(ml.run_id, "dev/loss")} == pytest.approx(test)
    assert run.data.params["training.steps"] == "3" and run.data.params["data.url"] == small_store_url


def test_tensorboard_hook_refuses_remote_dir(tmp_path):
    pytest.importorskip("tensorboardX", reason="tensorboardX (the [tracking] extra) not installed")
    from differland_dist.errors import DifferlandError
    from differland_dist.distributed.tracking import TensorBoardHook

    with pytest.raises(DifferlandError, match="local directory"):
        TensorBoardHook("gs://bucket/tb")
