"""The notebook API: stores and outputs as xarray, the TrainedModel façade against `differland
infer`, the gridded view and the lazy top-level names (docs/python.md's blocks run in
tests/test_demo.py, on the demo's output)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

import differland_dist as dl
from differland_dist.errors import ConfigError, DifferlandError
from differland_dist.vocabulary.series import DEFAULT_SERIES
from differland_dist.vocabulary.parameters import PARAMETERS, PARAM_NAMES
from differland_dist.vocabulary.units import udunits

ROOT = Path(__file__).resolve().parents[1]
WARM_UP = 3


@pytest.fixture(scope="module")
def checkpoint(small_store_url, tmp_path_factory):  # noqa: F811
    from random_checkpoint import random_checkpoint

    path = str(tmp_path_factory.mktemp("api_ckpt") / "network.npz")
    return random_checkpoint(small_store_url, path, seed=3, config={"loss": {"warm_up": WARM_UP}})


@pytest.fixture(scope="module")
def output(checkpoint, small_store_url, tmp_path_factory):  # noqa: F811
    url = str(tmp_path_factory.mktemp("api_out") / "out.zarr")
    dl.run_inference(checkpoint, url, small_store_url,
                     options=dl.InferenceOptions(executor="local", chunk_pixels=8))
    return url


def test_open_store_layout(small_store_url, small_ds):  # noqa: F811
    ds = dl.open_store(small_store_url)
    n = small_ds.sizes["pixel"]
    assert ds.sizes["pixel"] == n and list(ds["pixel"].values) == list(range(n))
    for c in ("pixel_lat", "pixel_lon", "row", "col", "patch", "split"):
        assert c in ds.coords and ds[c].dims == ("pixel",)
    np.testing.assert_array_equal(ds["pixel_lat"].values, small_ds["lat"].values)
    assert np.issubdtype(ds["time"].dtype, np.datetime64)
    assert ds["t_max"].attrs["units"] == "degC"
    # the grid: every pixel's cell centre is its own position
    np.testing.assert_allclose(ds["lat"].values[ds["row"].values], ds["pixel_lat"].values, atol=1e-4)
    np.testing.assert_allclose(ds["lon"].values[ds["col"].values], ds["pixel_lon"].values, atol=1e-4)


def test_trained_model_matches_infer(checkpoint, output, small_store_url):  # noqa: F811
    ds = dl.open_store(small_store_url)
    out = dl.open_output(output)
    tm = dl.TrainedModel.from_checkpoint(checkpoint)
    assert tm.step == 0 and tm.source == checkpoint
    # parameters of every pixel = infer's param_* (same network inputs and heads)
    p = tm.parameters(ds)
    assert set(p.data_vars) == set(PARAM_NAMES)
    for name, units in ((b.output_name, udunits(b.units)) for b in PARAMETERS):
        assert p[name].attrs["units"] == units
        np.testing.assert_allclose(p[name].values, out[f"param_{name}"].values, rtol=2e-6)
    # series of a non-contiguous subset, in blocks smaller than the batch (padding, one shape)
    pix = np.array([1, 5, 6, 30, 31, 32, 66])
    sub = ds.isel(pixel=pix)
    sim = tm.simulate(sub, block_pixels=3)
    assert sim["gpp"].dims == ("pixel", "time") and list(sim["pixel"].values) == list(pix)
    np.testing.assert_array_equal(sim["time"].values, out["time"].values)
    np.testing.assert_array_equal(sim["pixel_lat"].values, sub["pixel_lat"].values)
    for name in DEFAULT_SERIES:
        assert sim[name].attrs["units"] == out[name].attrs["units"]
        ref = out[name].sel(pixel=sub["pixel"]).values
        np.testing.assert_allclose(sim[name].values, ref, rtol=1e-4,
                                   atol=1e-5 * max(1.0, float(np.abs(ref).max())), err_msg=name)
    # the same parameters given explicitly run the same model
    again = tm.simulate(sub, series=["gpp", "pool_water"], parameters=tm.parameters(sub))
    for name in ("gpp", "pool_water"):
        np.testing.assert_allclose(again[name].values, sim[name].values, rtol=1e-4,
                                   atol=1e-5 * max(1.0, float(np.abs(sim[name].values).max())))
    # the store's true parameters give another run (as a (pixel, param) DataArray)
    truth = tm.simulate(sub, series=["gpp"], parameters=sub["true_params"])
    assert truth.attrs["parameters"].startswith("given")
    assert not np.allclose(truth["gpp"].values, sim["gpp"].values)
    x = tm.inputs(sub)
    assert x.dims == ("pixel", "input") and x["input"].values[0] == "hemisphere"
    assert list(x["input"].values[1:]) == tm.predictor_names


def test_time_subset_and_per_pixel_forcing(checkpoint, small_store_url):  # noqa: F811
    """A batch cut in time starts there, with the store's day numbers (not 0-based); per-step
    forcing given per pixel (``co2_by_pixel``, site stores) wins over the shared series."""
    from differland_dist.notebook.trained import _numeric_time

    ds = dl.open_store(small_store_url)
    tm = dl.TrainedModel.from_checkpoint(checkpoint)
    sub = ds.isel(pixel=[0, 1], time=slice(12, None))
    sim = tm.simulate(sub, series=["gpp"])
    assert sim.sizes["time"] == ds.sizes["time"] - 12
    raw = xr.open_zarr(small_store_url, decode_times=False, zarr_format=3)["time"].values
    np.testing.assert_array_equal(_numeric_time(sub["time"]), raw[12:])
    co2 = sub["co2"].broadcast_like(sub["t_max"]).transpose("pixel", "time")
    same = tm.simulate(sub.assign(co2_by_pixel=co2), series=["gpp"])
    np.testing.assert_array_equal(same["gpp"].values, sim["gpp"].values)
    more = tm.simulate(sub.assign(co2_by_pixel=co2 + 200.0), series=["gpp"])
    assert (more["gpp"].values > sim["gpp"].values + 1e-6).sum() > 0.5 * sim["gpp"].size


def test_gridded_view(output):
    out = dl.open_output(output)
    for name in ("field_capacity", "f_gpp"):
        g = dl.gridded(out[f"param_{name}"], grid=out)
        assert g.dims == ("lat", "lon")
        np.testing.assert_array_equal(g.values, out[f"map_{name}"].values)  # NaN off land too
    cube = dl.gridded(out["gpp"], grid=out)
    assert cube.dims == ("time", "lat", "lon") and cube.attrs["units"] == out["gpp"].attrs["units"]
    r, c = out["row"].values, out["col"].values
    np.testing.assert_array_equal(cube.values[:, r, c], out["gpp"].values.T)
    assert np.isnan(cube.values).sum() == cube.sizes["time"] * (cube.sizes["lat"] * cube.sizes["lon"] - r.size)
    # a Dataset maps on its own grid; a DataArray without one onto its pixels' box
    both = dl.gridded(out[["gpp", "lai", "map_f_gpp"]])
    assert set(both.data_vars) == {"gpp", "lai"} and both["lai"].shape == cube.shape
    box = dl.gridded(out["param_f_gpp"].isel(pixel=slice(10, 30)))
    sub = out.isel(pixel=slice(10, 30))
    r0, c0 = int(sub["row"].min()), int(sub["col"].min())
    want = out["map_f_gpp"].isel(lat=slice(r0, int(sub["row"].max()) + 1),
                                 lon=slice(c0, int(sub["col"].max()) + 1))
    np.testing.assert_allclose(box["lat"].values, want["lat"].values, atol=1e-3)
    np.testing.assert_allclose(box["lon"].values, want["lon"].values, atol=1e-3)
    got = box.values
    np.testing.assert_array_equal(got[sub["row"].values - r0, sub["col"].values - c0],
                                  sub["param_f_gpp"].values)
    assert np.isnan(got).sum() == got.size - 20


def test_clear_errors(checkpoint, output, small_store_url, tmp_path):  # noqa: F811
    ds = dl.open_store(small_store_url)
    tm = dl.TrainedModel.from_checkpoint(checkpoint)
    with pytest.raises(ConfigError, match=r"lacks variable\(s\) \['t_max'\]"):
        tm.simulate(ds.isel(pixel=[0]).drop_vars("t_max"))
    with pytest.raises(ConfigError, match="SAND"):
        tm.parameters(ds.drop_vars("SAND"))
    with pytest.raises(DifferlandError, match="xarray.Dataset"):
        tm.parameters(ds["t_max"])
    with pytest.raises(DifferlandError, match="'pixel' dimension"):
        tm.parameters(ds.isel(pixel=0))
    with pytest.raises(DifferlandError, match="unknown output series"):
        tm.simulate(ds.isel(pixel=[0]), series=["gpp", "npp"])
    with pytest.raises(DifferlandError, match="2 pixels, the batch 3"):
        tm.simulate(ds.isel(pixel=[0, 1, 2]), parameters=tm.parameters(ds.isel(pixel=[0, 1])))
    with pytest.raises(DifferlandError, match="different pixels"):
        tm.simulate(ds.isel(pixel=[0, 1]), parameters=tm.parameters(ds.isel(pixel=[2, 3])))
    with pytest.raises(DifferlandError, match=r"lack 1 of the 40 parameters: \['LCMA'\]"):
        tm.simulate(ds.isel(pixel=[0]), parameters=tm.parameters(ds.isel(pixel=[0])).drop_vars("LCMA"))
    with pytest.raises(DifferlandError, match="no inference output"):
        dl.open_output(str(tmp_path / "nothing.zarr"))
    with pytest.raises(DifferlandError, match="not a differland"):
        dl.open_output(small_store_url)
    with pytest.raises(DifferlandError, match=r"lack coordinate\(s\) \['row'\]"):
        dl.gridded(dl.open_output(output)["gpp"].drop_vars("row"))


def test_top_level_is_lazy_and_complete():
    """The package's top level resolves lazily, and importing it loads no JAX."""
    code = ("import sys, differland_dist as dl\n"
            "assert 'jax' not in sys.modules, 'import differland_dist loaded JAX'\n"
            "missing = [n for n in dl.__all__ if getattr(dl, n, None) is None]\n"
            "assert not missing, missing\n"
            "assert set(dl.__all__) <= set(dir(dl))\n"
            "print('ok', len(dl.__all__))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-2000:]
