"""Batch inference: Ray Data pipeline, output layout, idempotency, resumption, netCDF, gs://."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import replace

import numpy as np
import pytest
from ray_session import ray_session
import xarray as xr

from storage_servers import gcs_emulator  # noqa: F401 - fixture
from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

from differland_dist.storage.location import Location
from differland_dist.errors import ConfigError, DifferlandError
from differland_dist.vocabulary.series import DEFAULT_SERIES, map_var, param_var
from differland_dist.inference.output import DONE, WRITTEN_AT, open_output, output_chunk, plan_tasks
from differland_dist.vocabulary.parameters import PARAM_NAMES
from differland_dist.inference.pipeline import InferenceOptions, run_inference
from differland_dist.storage.location import Location

PPT = 16  # pixels per task: 2 output chunks of 8 pixels (chunk_pixels=8, the store's chunk)
#          -> 5 tasks over the 67 pixels (9 chunks)
RAY = InferenceOptions(chunk_pixels=8, min_actors=1, max_actors=2, pixels_per_task=PPT)
LOCAL = InferenceOptions(chunk_pixels=8, executor="local", pixels_per_task=PPT)


@pytest.fixture(scope="module")
def ray_cluster():
    """Ray for this module: the worker's shared cluster (or 2 CPUs of its own)."""
    with ray_session(num_cpus=2):
        yield


@pytest.fixture(scope="module")
def checkpoint(small_store_url, tmp_path_factory):  # noqa: F811
    from random_checkpoint import random_checkpoint

    path = str(tmp_path_factory.mktemp("ckpt") / "network.npz")
    return random_checkpoint(small_store_url, path, config={"loss": {"warm_up": 3}})


@pytest.fixture(scope="module")
def ray_output(ray_cluster, checkpoint, small_store_url, tmp_path_factory):  # noqa: F811
    """One Ray Data run (actor pool min 1, max 2) over the small store."""
    url = str(tmp_path_factory.mktemp("out") / "out.zarr")
    report = run_inference(checkpoint, url, small_store_url, options=RAY)
    return url, report


def _open(url, so=None):
    from differland_dist.data.store import zarr_store

    return xr.open_zarr(zarr_store(Location(url, so)), zarr_format=3, consolidated=True)


def _values(url, so=None) -> dict[str, np.ndarray]:
    ds = _open(url, so)
    return {k: np.asarray(ds[k].values) for k in ds.data_vars if k not in (DONE, WRITTEN_AT)}


def test_plan_tasks():
    done = np.array([1, 0, 0, 0, 1, 0, 1, 1, 0], bool)
    assert plan_tasks(done, 2) == [(1, 3), (3, 4), (5, 6), (8, 9)]
    assert plan_tasks(done, 10) == [(1, 4), (5, 6), (8, 9)]
    assert plan_tasks(np.ones(4, bool), 3) == []
    assert [output_chunk(8, t) for t in (1, 8, 20, 2048)] == [8, 8, 16, 2048]


def test_ray_pipeline_output(ray_output, small_ds, checkpoint):  # noqa: F811
    """Complete, every chunk computed once, CF attributes, values equal to a direct run of the
    network and DALEC, maps consistent with the per-pixel parameters, opens and plots."""
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    from differland_dist.data.batch import assemble_forcing, predictor_names
    from differland_dist.inference.compute import network_inputs
    from differland_dist.model import simulate
    from differland_dist.vocabulary.dalec_io import OUTPUT_INDEX
    from differland_dist.network import apply_network, to_parameters
    from differland_dist.runs.trained import load_trained

    url, report = ray_output
    N, T = small_ds.sizes["pixel"], small_ds.sizes["time"]
    assert report.complete and not report.already_complete
    assert report.chunks_computed == list(range(9))
    assert report.pixels_computed == N and len(report.tasks) == 5
    assert len({t["actor"] for t in report.tasks}) <= 2
    assert all(t["read_s"] >= 0 and t["compute_s"] > 0 and t["write_s"] > 0 for t in report.tasks)

    ds = _open(url)
    assert ds.attrs["complete"] is True and ds.attrs["Conventions"] == "CF-1.8"
    assert dict(ds.sizes) == {"pixel": N, "time": T, "lat": 12, "lon": 24, "chunk": 9, "nv": 2}
    assert np.issubdtype(ds.time.dtype, np.datetime64)
    assert (ds[DONE].values == 1).all()
    for name in PARAM_NAMES:
        v = ds[param_var(name)]
        assert v.dims == ("pixel",) and v.attrs["units"] and v.attrs["long_name"]
        assert ds[map_var(name)].dims == ("lat", "lon")
    for name in DEFAULT_SERIES:
        assert ds[name].dims == ("pixel", "time") and ds[name].attrs["units"] and ds[name].attrs["long_name"]
    assert ds.gpp.attrs["units"] == "g m-2 d-1" and ds.pool_water.attrs["units"] == "mm"  # UDUNITS: carbon in the names
    assert ds.param_tor_wood.attrs["units"] == "d-1"

    # direct computation from the in-memory synthetic Earth
    tm = load_trained(Location(checkpoint))
    names = predictor_names(tm.config.data.predictors)
    raw = np.stack([small_ds[n].values for n in names], axis=1)
    lat = small_ds["lat"].values
    x = apply_network(tm.network, jnp.asarray(network_inputs(raw, lat, tm.standardizer)))
    p = to_parameters(x)
    dalec, pheno = np.asarray(p.process.stack()), np.stack(p.phenology, -1)
    pools = np.asarray(p.initial_pools.stack())
    np.testing.assert_allclose(ds.param_f_gpp.values, dalec[:, 1], rtol=1e-5)
    np.testing.assert_allclose(ds.param_Bday.values, pheno[:, 0], rtol=1e-5)
    np.testing.assert_allclose(ds.param_init_som.values, pools[:, 5], rtol=1e-5)
    v = {k: small_ds[k].values for k in ("time", "t_min", "t_max", "swrad", "co2", "doy",
                                          "burned_area", "vpd", "precip", "delta_t", "lat", "MAT", "MAP")}
    _, y = simulate(assemble_forcing(v), dalec, pheno, pools, closed_budget=tm.config.model.closed_budget)
    y = np.asarray(y)
    for name, srcs in (("gpp", ["gpp"]), ("nee", ["nee"]), ("lai", ["lai"]), ("sif", ["SIF"]),
                       ("fire", ["total_fire_combust"]), ("reco", ["gpp", "nee"]),
                       ("pool_som", ["next_som_pool"]), ("et", ["ET"])):
        want = sum(y[..., OUTPUT_INDEX[s]] for s in srcs)
        np.testing.assert_allclose(ds[name].values, want, rtol=2e-4, atol=1e-4, err_msg=name)

    # maps: the per-pixel parameter at each pixel's cell, NaN elsewhere
    m = ds.map_f_gpp.values
    np.testing.assert_array_equal(m[ds.row.values, ds.col.values], ds.param_f_gpp.values)
    assert np.isnan(m).sum() == m.size - N
    np.testing.assert_allclose(ds.lat.values[ds.row.values], ds.pixel_lat.values)
    np.testing.assert_allclose(ds.lon.values[ds.col.values], ds.pixel_lon.values)
    ds.map_f_gpp.plot()
    ds.gpp.isel(pixel=0).plot()
    matplotlib.pyplot.close("all")


def test_complete_output_is_a_noop(ray_output, checkpoint, small_store_url):  # noqa: F811
    url, _ = ray_output
    before = _open(url)[WRITTEN_AT].values.copy()
    r = run_inference(checkpoint, url, small_store_url, options=RAY)
    assert r.already_complete and r.complete and r.tasks == [] and r.chunks_computed == []
    np.testing.assert_array_equal(_open(url)[WRITTEN_AT].values, before)


def _unmark(url: str, chunks, C: int = 8) -> None:
    """Simulate an interruption: chunks not committed (data wiped), output not complete."""
    g = open_output(url, mode="r+")
    for k in chunks:
        g[DONE][k] = 0
        for name in DEFAULT_SERIES:
            g[name][k * C:(k + 1) * C] = np.nan
        g[param_var("f_gpp")][k * C:(k + 1) * C] = np.nan
    g.attrs["complete"] = False


def test_resume_computes_only_missing_chunks(ray_output, checkpoint, small_store_url,  # noqa: F811
                                             tmp_path, caplog):
    src, _ = ray_output
    url = str(tmp_path / "resumed.zarr")
    shutil.copytree(src, url)
    reference = _values(src)
    stamps = _open(url)[WRITTEN_AT].values.copy()
    _unmark(url, [1, 4, 8])
    assert _open(url).attrs["complete"] is False
    caplog.set_level(logging.INFO, logger="differland_dist.inference")
    caplog.set_level(logging.INFO, logger="differland_dist.common.progress")  # the pixels-done lines
    r = run_inference(checkpoint, url, small_store_url, options=RAY)
    assert r.chunks_computed == [1, 4, 8] and r.complete
    assert r.pixels_computed == 8 + 8 + 3  # chunk 8 holds pixels 64..66
    assert any("pixels done: 19 / 19" in m for m in caplog.messages)
    after = _open(url)
    assert after.attrs["complete"] is True
    changed = np.flatnonzero(after[WRITTEN_AT].values != stamps)
    assert changed.tolist() == [1, 4, 8]
    for k, v in _values(url).items():
        np.testing.assert_array_equal(v, reference[k], err_msg=k)


def test_interrupted_run_resumes_locally(checkpoint, small_store_url, ray_output, tmp_path):  # noqa: F811
    """max_tasks stops a run part-way (output partial, not complete); a rerun finishes only
    the rest; the result matches the Ray run."""
    url = str(tmp_path / "partial.zarr")
    r1 = run_inference(checkpoint, url, small_store_url, options=replace(LOCAL, max_tasks=2))
    assert not r1.complete and r1.chunks_computed == [0, 1, 2, 3]
    part = _open(url)
    assert part.attrs["complete"] is False
    assert part[DONE].values.tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert np.isnan(part.gpp.values[32:]).all() and np.isfinite(part.gpp.values[:32]).all()
    r2 = run_inference(checkpoint, url, small_store_url, options=LOCAL)
    assert r2.complete and r2.chunks_computed == [4, 5, 6, 7, 8]
    ref = _values(ray_output[0])
    for k, v in _values(url).items():
        np.testing.assert_allclose(v, ref[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_netcdf_export_matches_zarr(checkpoint, small_store_url, tmp_path):  # noqa: F811
    out = str(tmp_path / "nc")
    r = run_inference(checkpoint, out, small_store_url, options=LOCAL, netcdf=True)
    assert r.complete
    assert sorted(os.path.basename(f) for f in r.netcdf) == ["maps.nc", "parameters.nc", "series.nc"]
    z = _open(r.out)
    with xr.open_dataset(f"{out}/parameters.nc") as p, xr.open_dataset(f"{out}/series.nc") as s, \
            xr.open_dataset(f"{out}/maps.nc") as m:
        nc = xr.merge([p, s, m], compat="identical")
        for name in [*(param_var(n) for n in PARAM_NAMES),
                     *(map_var(n) for n in PARAM_NAMES), *DEFAULT_SERIES]:
            np.testing.assert_array_equal(nc[name].values, z[name].values, err_msg=name)
            assert nc[name].attrs["units"] == z[name].attrs["units"]
            assert nc[name].attrs["long_name"] == z[name].attrs["long_name"]
        np.testing.assert_array_equal(nc.time.values, z.time.values)
        np.testing.assert_array_equal(nc.pixel_lat.values, z.pixel_lat.values)
        assert nc.attrs["complete"] == 1 and nc.attrs["source_store"] == small_store_url
    # rerun: complete, files there -> nothing recomputed
    r2 = run_inference(checkpoint, out, small_store_url, options=LOCAL, netcdf=True)
    assert r2.already_complete and r2.tasks == []


def test_gcs_output(gcs_emulator, checkpoint, small_store_url, ray_output):  # noqa: F811
    so = gcs_emulator["storage_options"]
    url = f"{gcs_emulator['url_prefix']}/{uuid.uuid4().hex}/out.zarr"
    r = run_inference(checkpoint, Location(url, so), small_store_url, options=LOCAL)
    assert r.complete
    ref = _values(ray_output[0])
    got = _values(url, so)
    for k in ("gpp", "pool_som", "param_f_gpp", "map_LCMA"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert run_inference(checkpoint, Location(url, so), small_store_url,
                         options=LOCAL).already_complete


def test_missing_predictor_sets_fail_before_any_work(small_ds, tmp_path):  # noqa: F811
    from differland_dist.data.store import write_store
    from random_checkpoint import random_checkpoint

    full = str(tmp_path / "full.zarr")
    write_store(small_ds, full)
    ckpt = random_checkpoint(full, str(tmp_path / "ck.npz"), predictor_sets=("PFT", "CLIM", "SOIL"))
    lean = str(tmp_path / "nosoil.zarr")
    write_store(small_ds.drop_vars(["BULK_DEN", "SAND", "SILT", "CLAY", "GRAVEL"]), lean)
    out = tmp_path / "never.zarr"
    with pytest.raises(ConfigError) as e:
        run_inference(ckpt, str(out), lean, options=LOCAL)
    assert "BULK_DEN" in str(e.value) and "SOIL" in str(e.value)
    assert not out.exists()


def test_output_of_another_checkpoint_is_refused(checkpoint, small_store_url, tmp_path):  # noqa: F811
    from random_checkpoint import random_checkpoint

    url = str(tmp_path / "o.zarr")
    opts = replace(LOCAL, max_tasks=0)
    r = run_inference(checkpoint, url, small_store_url, options=opts)
    assert not r.complete and r.tasks == [] and _open(url)[DONE].values.sum() == 0
    other = random_checkpoint(small_store_url, str(tmp_path / "other.npz"), seed=1)
    with pytest.raises(DifferlandError, match="network_sha256"):
        run_inference(other, url, small_store_url, options=opts)
    assert run_inference(other, url, small_store_url, options=opts, overwrite=True).tasks == []
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("keep me")
    with pytest.raises(DifferlandError, match="refusing"):
        run_inference(checkpoint, str(tmp_path / "junk"), small_store_url, options=opts, overwrite=True)
    assert (tmp_path / "junk" / "file.txt").exists()
    with pytest.raises(DifferlandError, match="not a differland inference output"):
        run_inference(checkpoint, small_store_url, small_store_url, options=opts, overwrite=True)


def test_cli(checkpoint, small_store_url, tmp_path, capsys):  # noqa: F811
    from differland_dist.cli.main import main

    url = str(tmp_path / "cli.zarr")
    rc = main(["infer", "--checkpoint", checkpoint, "--store", small_store_url, "--out", url,
               "--executor", "local", "--max-tasks", "0", "--series", "gpp,nee,lai", "--json",
               "--chunk-pixels", "20"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["complete"] is False and summary["n_pixels"] == 67 and summary["n_chunks"] == 5
    ds = _open(url)
    assert ds.attrs["series"] == ["gpp", "nee", "lai"] and ds.attrs["chunk_pixels"] == 16
    assert ds.gpp.encoding["chunks"] == (16, 24)
    rc = main(["infer", "--checkpoint", checkpoint, "--out", url, "--series", "gpp,bogus"])
    assert rc == 1 and "bogus" in capsys.readouterr().err
    rc = main(["infer", "--checkpoint", str(tmp_path / "nothing"), "--out", url])
    assert rc == 1 and "error:" in capsys.readouterr().err
