"""Inference outputs of a FLUXNET site store whose sites cover different years carry each
site's own dates (``time_by_pixel``), pass the CF checker, and export as netCDF with them."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from cf_check import cf_problems, unexpected


@pytest.fixture(scope="module")
def site_output(shared_dir, tmp_path_factory):
    from differland_dist.data.importers.sites import sites_to_store
    from differland_dist.inference.pipeline import InferenceOptions, run_inference
    from random_checkpoint import random_checkpoint

    d = tmp_path_factory.mktemp("siteout")
    store = str(d / "sites.zarr")
    # US-Ha1 1999-2007 and AU-Stp 2010-2018: the same step index is eleven years apart
    sites_to_store(shared_dir / "data" / "fluxnet_sites", store, monthly=True, only="US-Ha1,AU-Stp")
    ckpt = random_checkpoint(store, str(d / "net.npz"), predictor_sets=("PFT",),
                             config={"loss": {"warm_up": 3}})
    r = run_inference(ckpt, str(d / "out"), store, netcdf=True,
                      options=InferenceOptions(executor="local", series=("gpp", "nee", "lai")))
    assert r.complete
    return store, str(d / "out"), r.out


def test_site_outputs_carry_each_sites_dates(site_output, tmp_path):
    store, out_dir, url = site_output
    s = xr.open_zarr(store, zarr_format=3, consolidated=True)
    o = xr.open_zarr(url, zarr_format=3, consolidated=True)
    assert list(s.site_id.values) == ["AU-Stp", "US-Ha1"]  # the order of site_coords.csv
    np.testing.assert_array_equal(o.time_by_pixel.values, s.time_by_pixel.values)
    years = o.time_by_pixel.dt.year.values
    assert years[0, 0] == 2010 and years[1, 0] == 1999  # not pixel 0's calendar for site 1
    assert years[1, -1] == 2007 and o.time.dt.year.values[0] == 2010
    assert "time_by_pixel" in o.gpp.attrs.get("coordinates", "") or "time_by_pixel" in o.gpp.coords
    with xr.open_dataset(f"{out_dir}/series.nc") as nc:  # the netCDF export keeps them
        np.testing.assert_array_equal(nc.time_by_pixel.values, o.time_by_pixel.values)
    raw = xr.open_zarr(url, zarr_format=3, consolidated=True, decode_times=False)
    # the series and two parameters (the checker's time grows faster than the variable count)
    problems = cf_problems(raw[["gpp", "nee", "lai", "param_LCMA", "param_uWUE"]], str(tmp_path), "sites")
    assert unexpected(problems, ("uWUE",)) == [], problems
