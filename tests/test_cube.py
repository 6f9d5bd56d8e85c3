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
from differland_dist.inference import cmor, output as out_mod
from differland_dist.inference.cube import export_cube


@pytest.fixture(scope="module")
def two_outputs(small_store_url, tmp_path_factory):  # noqa: F811
    """Two complete inference outputs of the small store (random networks, seeds 0 and 1)."""
    from differland_dist.inference.pipeline import InferenceOptions, run_inference
    from differland_dist.inference.random_checkpoint import random_checkpoint

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
    raw.split.attrs["flag_values"] = np.asarray(raw.split.attrs["flag_values"], np.int8)
    problems = cf_problems(raw, str(tmp_path), "checked")
    assert problems == [], problems


def test_cmor_table_units_convert_and_standard_names_exist():
    import xml.etree.ElementTree as ET
    from importlib.resources import files

    cf_units = pytest.importorskip("cf_units")
    pytest.importorskip("compliance_checker")
    root = ET.parse(str(files("compliance_checker") / "data" / "cf-standard-name-table.xml")).getroot()
    table = {e.get("id"): e.findtext("canonical_units") or "1" for e in root.iter("entry")}
    assert set(cmor.CMOR_TABLE) <= set(out_mod.SERIES_BY_NAME)
    for name, v in cmor.CMOR_TABLE.items():
        src = out_mod.SERIES_BY_NAME[name].units
        assert cmor.cmor_factor(src, v) != 0
        if v.standard_name:
            assert v.standard_name in table, v
            assert cf_units.Unit(v.units).is_convertible(cf_units.Unit(table[v.standard_name])), v
    assert cmor.cmor_factor("g m-2 d-1", cmor.CMOR_TABLE["nbe"]) == pytest.approx(-1e-3 / 86400)
    assert cmor.cmor_factor("mm", cmor.CMOR_TABLE["pool_water"]) == 1.0  # 1 mm of water = 1 kg m-2
    with pytest.raises(ValueError, match="cannot convert"):
        cmor.cmor_factor("m", cmor.CMOR_TABLE["gpp"])


def test_provenance_in_outputs_and_checkpoints(two_outputs, tmp_path):
    from differland_dist import checkpoint, provenance

    z = xr.open_zarr(two_outputs[0], zarr_format=3, consolidated=True)
    assert z.attrs["differland_version"] and "differland_git_commit" in z.attrs
    assert z.attrs["config_sha256"] == provenance.config_digest(z.attrs["config_json"])
    url = str(tmp_path / "c.npz")
    checkpoint.save(url, {"w": np.zeros(2, np.float32)}, {"step": 3, "config": {"a": 1},
                                                          "differland_version": "old"})
    _, meta = checkpoint.load(url)
    assert meta["differland_version"] != "old"  # what wrote it, not a copied record
    assert meta["config_sha256"] == provenance.config_digest({"a": 1})
    assert provenance.config_digest({"b": 1, "a": 2}) == provenance.config_digest('{"a": 2, "b": 1}')
