"""``differland import-cube``: generated CF (time, lat, lon) files in other units and on a finer
grid -> a valid store; values equal hand-computed regridded, converted numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from differland_dist.cli.main import main
from differland_dist.data.importers.cube import import_cube
from differland_dist.data.store import open_store
from differland_dist.errors import DataValidationError, DifferlandError

# source: 0.5 degree cells over a 4 x 4 degree box (lon 0..360 convention), 2 years monthly
LAT = np.arange(43.75, 40, -0.5)          # 8 rows, north first
LON = np.arange(356.25, 360, 0.5) % 360   # 8 columns: 356.25 .. 359.75 (= -3.75 .. -0.25)
TIME = pd.date_range("2001-01-01", periods=24, freq="MS") + pd.Timedelta(days=14)  # mid-month


def _field(seed: int, lo: float, hi: float, timed: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (TIME.size, LAT.size, LON.size) if timed else (LAT.size, LON.size)
    return rng.uniform(lo, hi, shape)


def _write(path, variables: dict, timed: bool = True) -> None:
    coords = {"lat": ("lat", LAT, {"units": "degrees_north", "standard_name": "latitude"}),
              "lon": ("lon", LON, {"units": "degrees_east", "standard_name": "longitude"})}
    dims = ("lat", "lon")
    if timed:
        coords["time"] = ("time", TIME)
        dims = ("time",) + dims
    xr.Dataset({k: (dims, v, a) for k, (v, a) in variables.items()}, coords=coords).to_netcdf(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("cf_in")
    f = {"mn2t": _field(1, 270, 290), "mx2t": _field(2, 291, 300), "ssrd": _field(3, 50, 300),
         "vpd": _field(4, 100, 2000), "tp": _field(5, 0, 5e-5), "LAI": _field(6, 0.1, 5),
         "LAI_sd": _field(7, 0.1, 1)}
    f["LAI"][3, 2, 2] = np.nan  # a gap
    _write(d / "era5.nc", {"mn2t": (f["mn2t"], {"units": "K"}), "mx2t": (f["mx2t"], {"units": "K"}),
                           "ssrd": (f["ssrd"], {"units": "W m-2"}), "vpd": (f["vpd"], {"units": "Pa"}),
                           "tp": (f["tp"], {"units": "kg m-2 s-1"})})
    _write(d / "lai.nc", {"LAI": (f["LAI"], {"units": "m2 m-2"}), "LAI_sd": (f["LAI_sd"], {"units": "1"})})
    clim = {"tas": _field(8, 275, 290, False), "pr": _field(9, 300, 1500, False),
            "GRA": _field(10, 0, 100, False)}
    clim["tas"][0, 0] = np.nan  # an ocean cell: the target cell keeps the other three
    _write(d / "clim.nc", {"tas": (clim["tas"], {"units": "K"}), "pr": (clim["pr"], {"units": "mm yr-1"}),
                           "GRA": (clim["GRA"], {"units": "%"}), "noun": (clim["pr"], {})}, timed=False)
    mapping = {
        "grid": {"resolution_deg": 1.0, "lat": [40, 44], "lon": [-4, 0]},
        "time": {"start_year": 2001, "years": 2}, "max_patch_size": 4,
        "split": {"dev_fraction": 0.25, "test_fraction": 0.25, "seed": 1},
        "co2": {"value": 380},
        "variables": {"t_min": {"file": "era5.nc", "variable": "mn2t"},
                      "t_max": {"file": "era5.nc", "variable": "mx2t"},
                      "swrad": {"file": "era5.nc", "variable": "ssrd"},
                      "vpd": {"file": "era5.nc", "variable": "vpd"},
                      "precip": {"file": "era5.nc", "variable": "tp"},
                      "burned_area": {"value": 0},
                      "MAT": {"file": "clim.nc", "variable": "tas"},
                      "MAP": {"file": "clim.nc", "variable": "pr"},
                      "GRA": {"file": "clim.nc", "variable": "GRA"}},
        "observations": {"lai": {"file": "lai.nc", "variable": "LAI", "uncertainty": "LAI_sd"}},
    }
    co2 = np.linspace(370e-6, 372e-6, TIME.size)
    xr.Dataset({"co2": ("time", co2, {"units": "mol mol-1"})}, coords={"time": TIME}).to_netcdf(d / "co2.nc")
    (d / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    return d, f, clim, mapping


def _block_mean(x: np.ndarray) -> np.ndarray:
    """(..., 8, 8) -> (..., 4, 4): cos(lat)-weighted mean of 2 x 2 source cells (NaN ignored)."""
    w = np.cos(np.deg2rad(LAT))[:, None] * np.ones(LON.size)
    ok = np.isfinite(x)
    num = np.where(ok, x, 0) * w
    den = ok * w
    s = lambda a: a.reshape(a.shape[:-2] + (4, 2, 4, 2)).sum((-3, -1))  # noqa: E731
    return s(num) / s(den)


def test_import_cube_values_units_and_tiling(sources, tmp_path):
    d, f, clim, _ = sources
    url = str(tmp_path / "cube.zarr")
    assert main(["import-cube", str(d / "mapping.yaml"), "--out", url]) == 0
    store = open_store(url)  # validates (schema, ranges, chunks)
    s = store.ds
    assert s.sizes["pixel"] == 16 and s.sizes["time"] == 24 and store.steps_per_year == 12
    r, c = s.row.values, s.col.values
    np.testing.assert_allclose(s.lat.values, 43.5 - r, atol=1e-6)
    np.testing.assert_allclose(s.lon.values, -3.5 + c, atol=1e-6)
    want = _block_mean(f["mn2t"])[:, r, c].T - 273.15
    np.testing.assert_allclose(s.t_min.values, want, rtol=1e-5)
    np.testing.assert_allclose(s.precip.values, _block_mean(f["tp"])[:, r, c].T * 86400, rtol=1e-5)
    np.testing.assert_allclose(s.swrad.values, _block_mean(f["ssrd"])[:, r, c].T * 0.0864, rtol=1e-5)
    np.testing.assert_allclose(s.vpd.values, _block_mean(f["vpd"])[:, r, c].T / 100, rtol=1e-5)
    np.testing.assert_allclose(s.MAT.values, _block_mean(clim["tas"])[r, c] - 273.15, rtol=1e-5)
    np.testing.assert_allclose(s.GRA.values, _block_mean(clim["GRA"])[r, c] / 100, rtol=1e-5)
    lai = _block_mean(f["LAI"])[:, r, c].T
    np.testing.assert_allclose(s.obs_lai.values, lai, rtol=1e-5)
    assert (s.obs_lai_weight.values > 0).all() and s.obs_lai_weight.values.mean() == pytest.approx(1, rel=1e-5)
    assert float(s.co2.values[0]) == 380
    import differland_dist as dl
    from differland_dist.data.store import write_store

    assert dl.write_store is write_store and dl.import_cube is import_cube  # public
    # patches: tiles of at most 4 cells, contiguous; the split drawn by patch
    sizes = np.bincount(s.patch.values)
    assert sizes.max() <= 4 and (np.diff(s.patch.values) >= 0).all()
    assert set(np.unique(s.split.values)) == {0, 1, 2}
    for p in np.unique(s.patch.values):
        assert np.unique(s.split.values[s.patch.values == p]).size == 1


def test_import_cube_nearest_and_errors(sources, tmp_path):
    d, f, _, mapping = sources
    near = {**mapping, "method": "nearest", "co2": {"file": "co2.nc", "variable": "co2"}, "grid": {"resolution_deg": 0.5, "lat": [41, 43], "lon": [-3, -1]}}
    (d / "near.yaml").write_text(yaml.safe_dump(near))
    ds = import_cube(d / "near.yaml")
    # 0.5 degree target on the source's cells: exactly the source values
    iy = np.abs(LAT[:, None] - ds.lat.values[None, :]).argmin(0)
    ix = np.abs(((LON + 180) % 360 - 180)[:, None] - ds.lon.values[None, :]).argmin(0)
    np.testing.assert_allclose(ds.t_max.values, f["mx2t"][:, iy, ix].T - 273.15, rtol=1e-5)
    np.testing.assert_allclose(ds.co2.values, np.linspace(370, 372, 24), rtol=1e-6)  # mol mol-1 -> ppm

    def bad(change: dict, match: str, exc=DifferlandError):
        (d / "bad.yaml").write_text(yaml.safe_dump({**mapping, **change}))
        with pytest.raises(exc, match=match):
            import_cube(d / "bad.yaml")

    v = mapping["variables"]
    bad({"variables": {**v, "MAP": {"file": "clim.nc", "variable": "noun"}}},
        r"clim.nc: noun \(for MAP\): no units attribute", DataValidationError)
    bad({"variables": {**v, "MAP": {"file": "clim.nc", "variable": "GRA"}}},
        r"units '%' cannot be converted to 'mm yr-1'", DataValidationError)
    bad({"variables": {k: e for k, e in v.items() if k != "vpd"}}, "lacks vpd")
    bad({"time": {"start_year": 2001, "years": 3}}, r"no step in 2003-01", DataValidationError)
    bad({"method": "bilinear"}, "method 'bilinear'")
    bad({"observations": {"lai": {"file": "lai.nc", "variable": "LAI", "stream": "nope"}}}, "stream 'nope'")
