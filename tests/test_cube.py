"""CF (time, lat, lon) cubes (``differland export``) of an inference output and of an
experiment's ensemble.zarr: values equal the per-pixel series, CMOR names and unit factors,
CF checker clean, provenance recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from cf_check import cf_problems, unexpected
from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

from differland_dist.cli.main import main
from differland_dist.errors import DifferlandError
from differland_dist.inference import cmor
from differland_dist.vocabulary.series import SERIES_BY_NAME
from differland_dist.inference.cube import export_cube
from differland_dist.storage.location import Location


@pytest.fixture(scope="module")
def two_outputs(small_store_url, tmp_path_factory):  # noqa: F811
    """Two complete inference outputs of the small store (random networks, seeds 0 and 1)."""
    from differland_dist.inference.pipeline import InferenceOptions, run_inference
    from random_checkpoint import random_checkpoint

    d = tmp_path_factory.mktemp("cube")
    outs = []
    for seed in (0, 1):
        ckpt = random_checkpoint(small_store_url, str(d / f"net{seed}.npz"), seed=seed,
                                 config={"loss": {"warm_up": 3}})
        r = run_inference(ckpt, str(d / f"out{seed}.zarr"), small_store_url,
                          options=InferenceOptions(executor="local", chunk_pixels=16, series=(
                              "gpp", "nee", "nbe", "et", "lai", "pool_som", "sif")))
        assert r.complete
        outs.append(r.out)
    return outs


def test_cube_equals_the_series_and_passes_the_cf_checker(two_outputs, tmp_path):
    url = two_outputs[0]
    z = xr.open_zarr(url, zarr_format=3, consolidated=True)
    dest = str(tmp_path / "cube.nc")
    assert main(["export", url, "--out", dest]) == 0
    with xr.open_dataset(dest) as c:
        assert c.gpp.dims == ("time", "lat", "lon")
        row, col = z.row.values, z.col.values
        for v in ("gpp", "nee", "lai", "pool_som"):
            np.testing.assert_array_equal(c[v].values[:, row, col], z[v].values.T, err_msg=v)
        land = np.zeros(c.gpp.shape[1:], bool)
        land[row, col] = True
        assert np.isnan(c.gpp.values[:, ~land]).all()
        assert c.gpp.attrs["cell_methods"] == "time: mean" and "cell_methods" not in c.lai.attrs
        assert c.gpp.attrs["grid_mapping"] == "crs" and c.gpp.attrs["cell_measures"] == "area: cell_area"
        assert c.time.attrs["bounds"] == "time_bnds"
        # the bounds are the steps: consecutive, and as long as the store's delta_t
        tb = c.time_bnds.values
        assert (tb[1:, 0] == tb[:-1, 1]).all()
        np.testing.assert_allclose((tb[:, 1] - tb[:, 0]) / np.timedelta64(1, "D"), z.step_days.values)
        assert list(c.split.attrs["flag_values"]) == [0, 1, 2]
        assert c.split.attrs["flag_meanings"] == "train dev test"
        np.testing.assert_array_equal(c.split.values[row, col], z.split.values)
        assert c.attrs["Conventions"] == "CF-1.8" and c.attrs["differland_version"]
        assert c.attrs["config_sha256"] == z.attrs["config_sha256"] and len(c.attrs["config_sha256"]) == 64
    with xr.open_dataset(dest, decode_times=False, mask_and_scale=False) as raw:
        problems = cf_problems(raw, str(tmp_path), "checked")
    assert problems == [], problems
    # to an object store (fsspec memory://): uploaded whole, the same values
    import uuid

    import fsspec

    remote = f"memory://cube-{uuid.uuid4().hex}/c.zarr"
    export_cube(url, remote, series=["gpp"])
    r = xr.open_zarr(fsspec.get_mapper(remote), zarr_format=3, consolidated=True)
    np.testing.assert_array_equal(r.gpp.values[:, z.row.values, z.col.values], z.gpp.values.T)
    # refused: an existing target, an unknown series, a wrong extension
    with pytest.raises(DifferlandError, match="exists"):
        export_cube(url, dest)
    with pytest.raises(DifferlandError, match="runoff"):
        export_cube(url, str(tmp_path / "b.nc"), series=["runoff"])
    with pytest.raises(DifferlandError, match=".nc or .zarr"):
        export_cube(url, str(tmp_path / "b.txt"))


def test_cmor_cube_names_units_and_signs(two_outputs, tmp_path):
    url = two_outputs[0]
    z = xr.open_zarr(url, zarr_format=3, consolidated=True)
    dest = str(tmp_path / "cmor.zarr")
    export_cube(url, dest, cmor=True)
    c = xr.open_zarr(dest, zarr_format=3, consolidated=True)
    assert {"gpp", "nee", "nbp", "evspsbl", "lai", "cSoil", "sif"} <= set(c.data_vars)
    assert "nbe" not in c and "pool_som" not in c and "et" not in c
    row, col = z.row.values, z.col.values
    day = 86400.0
    # g m-2 d-1 -> kg m-2 s-1 is 1e-3 / 86400; nbp = -nbe; g m-2 -> kg m-2 is 1e-3
    np.testing.assert_allclose(c.gpp.values[:, row, col], z.gpp.values.T * 1e-3 / day, rtol=1e-6)
    np.testing.assert_allclose(c.nbp.values[:, row, col], -z.nbe.values.T * 1e-3 / day, rtol=1e-6)
    np.testing.assert_allclose(c.evspsbl.values[:, row, col], z.et.values.T / day, rtol=1e-6)
    np.testing.assert_allclose(c.cSoil.values[:, row, col], z.pool_som.values.T * 1e-3, rtol=1e-6)
    np.testing.assert_array_equal(c.sif.values[:, row, col], z.sif.values.T)  # no CMOR name
    assert c.gpp.attrs["units"] == "kg m-2 s-1" and c.cSoil.attrs["units"] == "kg m-2"
    assert c.nbp.attrs["standard_name"].startswith("surface_net_downward")
    assert c.evspsbl.attrs["original_name"] == "et"
    raw = xr.open_zarr(dest, zarr_format=3, consolidated=True, decode_times=False, mask_and_scale=False)
    assert raw.split.attrs["flag_values"] == [0, 1, 2]  # zarr attributes are JSON: a list
    problems = cf_problems(raw, str(tmp_path), "checked")
    assert problems == [], problems


def test_cmor_table_units_convert_and_standard_names_exist():
    import xml.etree.ElementTree as ET
    from importlib.resources import files

    cf_units = pytest.importorskip("cf_units")
    pytest.importorskip("compliance_checker")
    root = ET.parse(str(files("compliance_checker") / "data" / "cf-standard-name-table.xml")).getroot()
    table = {e.get("id"): e.findtext("canonical_units") or "1" for e in root.iter("entry")}
    assert set(cmor.CMOR_TABLE) <= set(SERIES_BY_NAME)
    for name, v in cmor.CMOR_TABLE.items():
        src = SERIES_BY_NAME[name].units
        assert cmor.cmor_factor(src, v) != 0
        if v.standard_name:
            assert v.standard_name in table, v
            assert cf_units.Unit(v.units).is_convertible(cf_units.Unit(table[v.standard_name])), v
    assert cmor.cmor_factor("g m-2 d-1", cmor.CMOR_TABLE["nbe"]) == pytest.approx(-1e-3 / 86400)
    assert cmor.cmor_factor("mm", cmor.CMOR_TABLE["pool_water"]) == 1.0  # 1 mm of water = 1 kg m-2
    with pytest.raises(ValueError, match="cannot convert"):
        cmor.cmor_factor("m", cmor.CMOR_TABLE["gpp"])


def test_provenance_in_outputs_and_checkpoints(two_outputs, tmp_path):
    from differland_dist.storage import checkpoint
    from differland_dist.common import provenance

    z = xr.open_zarr(two_outputs[0], zarr_format=3, consolidated=True)
    assert z.attrs["differland_version"] and "differland_git_commit" in z.attrs
    assert z.attrs["config_sha256"] == provenance.config_digest(z.attrs["config_json"])
    url = str(tmp_path / "c.npz")
    checkpoint.save(Location(url), {"w": np.zeros(2, np.float32)}, {"step": 3, "config": {"a": 1},
                                                          "differland_version": "old"})
    _, meta = checkpoint.load(Location(url))
    assert meta["differland_version"] != "old"  # what wrote it, not a copied record
    assert meta["config_sha256"] == provenance.config_digest({"a": 1})
    assert provenance.config_digest({"b": 1, "a": 2}) == provenance.config_digest('{"a": 2, "b": 1}')


@pytest.fixture(scope="module")
def ensemble_url(two_outputs, small_store_url, tmp_path_factory):  # noqa: F811
    from differland_dist.data.store import open_store
    from differland_dist.experiment.ensemble import write_ensemble

    url = str(tmp_path_factory.mktemp("ens") / "ensemble.zarr")
    write_ensemble(url, open_store(small_store_url), {"A": list(two_outputs), "B": two_outputs[:1]},
                   ["gpp", "nbe", "lai"])
    return url


def test_ensemble_store_is_cf_with_numeric_quantiles(two_outputs, ensemble_url, tmp_path):
    from cf_check import COMBINED_VIEWS, UWUE, ensemble_sample

    a, b = (xr.open_zarr(u, zarr_format=3, consolidated=True) for u in two_outputs)
    e = xr.open_zarr(ensemble_url, zarr_format=3, consolidated=True)
    assert list(e["quantile"].values) == [0.05, 0.5, 0.95] and e["quantile"].dtype == np.float64
    assert e.gpp.dims == ("predictor_set", "pixel", "time")
    assert e.gpp_quantile.dims == ("predictor_set", "quantile", "pixel", "time")
    x = np.stack([a.gpp.values, b.gpp.values]).astype(np.float64)
    np.testing.assert_allclose(e.gpp.sel(predictor_set="A").values, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(e.gpp_sd.sel(predictor_set="A").values, x.std(0, ddof=1), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(e.gpp_quantile.sel(predictor_set="A", quantile=0.5).values,
                               np.median(x, 0), rtol=1e-6)
    np.testing.assert_allclose(e.gpp_quantile.sel(predictor_set="A", quantile=0.05).values,
                               x.min(0) + 0.05 * (x.max(0) - x.min(0)), rtol=1e-5, atol=1e-6)
    assert float(np.abs(e.gpp_sd.sel(predictor_set="B")).max()) == 0.0  # one member
    np.testing.assert_allclose(e.map_LCMA.sel(predictor_set="B").values, a.map_LCMA.values, rtol=1e-6)
    assert e.gpp.attrs["standard_name"] == a.gpp.attrs["standard_name"]
    assert "standard_name" not in e.gpp_sd.attrs and e.gpp.attrs["cell_methods"] == "time: mean"
    assert e.map_LCMA_sd.attrs["grid_mapping"] == "crs" and "cell_area" in e and "time_bnds" in e
    assert e.attrs["Conventions"] == "CF-1.8" and e.attrs["config_sha256"] == a.attrs["config_sha256"]
    sample = ensemble_sample(e)
    assert {"gpp", "gpp_sd", "gpp_quantile", "map_LCMA_quantile", "param_Bday_sd"} <= set(sample.data_vars)
    problems = cf_problems(sample, str(tmp_path), "ensemble")
    assert unexpected(problems, COMBINED_VIEWS + UWUE) == [], problems
    assert any("uWUE" in m for m in problems)  # the allowance is used, not a blanket pass


def test_export_of_an_ensemble_set(ensemble_url, tmp_path):
    e = xr.open_zarr(ensemble_url, zarr_format=3, consolidated=True)
    with pytest.raises(DifferlandError, match="--set"):
        export_cube(ensemble_url, str(tmp_path / "x.nc"))
    old = xr.Dataset({"gpp": (("predictor_set", "statistic", "pixel", "time"), np.zeros((1, 5, 2, 3)))},
                     coords={"lat": [0.5], "lon": [0.5]}, attrs={"complete": True})
    old.to_zarr(str(tmp_path / "old.zarr"), zarr_format=3, consolidated=True)
    with pytest.raises(DifferlandError, match="older version"):
        export_cube(str(tmp_path / "old.zarr"), str(tmp_path / "o.nc"))
    dest = str(tmp_path / "ens.nc")
    assert main(["export", ensemble_url, "--out", dest, "--set", "A", "--cmor"]) == 0
    row, col = e.row.values, e.col.values
    with xr.open_dataset(dest) as c:
        assert c.gpp_quantile.dims == ("quantile", "time", "lat", "lon")
        np.testing.assert_allclose(c.nbp_sd.values[:, row, col],
                                   e.nbe_sd.sel(predictor_set="A").values.T * 1e-3 / 86400, rtol=1e-6)
        # nbp = -nbe: its 5 % quantile is minus nbe's 95 % quantile
        nbe_q = np.swapaxes(e.nbe_quantile.sel(predictor_set="A").values, 1, 2)
        np.testing.assert_allclose(c.nbp_quantile.values[:, :, row, col],
                                   -nbe_q[::-1] * 1e-3 / 86400, rtol=1e-6)
        q = c.nbp_quantile.values
        assert ((q[0] <= q[2]) | np.isnan(q[0])).all()  # still increasing with the probability
        np.testing.assert_allclose(c.gpp_quantile.values[:, :, row, col],
                                   np.swapaxes(e.gpp_quantile.sel(predictor_set="A").values, 1, 2)
                                   * 1e-3 / 86400, rtol=1e-6)
        assert c.attrs["predictor_set"] == "A"
    with xr.open_dataset(dest, decode_times=False, mask_and_scale=False) as raw:
        problems = cf_problems(raw, str(tmp_path), "checked")
    assert problems == [], problems
