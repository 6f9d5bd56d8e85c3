"""The importers: FLUXNET site files and the paper's global netCDF layout, into valid stores."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from differland_dist.storage.location import Location
from differland_dist.cli.main import main
from differland_dist.data import batch, schema
from differland_dist.data.importers import netcdf as nc
from differland_dist.data.importers.sites import IGBP_TO_PFT, import_sites, sites_to_store
from differland_dist.data.reader import PatchReader
from differland_dist.data.validate import check_store, validate_store
from differland_dist.errors import DataValidationError, DifferlandError
from differland_dist.vocabulary.dalec_io import FORCING_INDEX
from storage_servers import gcs_emulator  # noqa: F401 - fixture

SITES = ("US-Var", "AU-Stp", "FR-Pue", "AU-How", "NL-Loo", "DE-Hai", "US-Ha1", "FI-Hyy")


@pytest.fixture(scope="module")
def sites_dir(shared_dir) -> Path:
    d = shared_dir / "data" / "fluxnet_sites"
    assert (d / "site_coords.csv").exists(), d
    return d


@pytest.fixture(scope="module")
def daily(sites_dir, tmp_path_factory):
    url = str(tmp_path_factory.mktemp("sites") / "daily.zarr")
    ds = sites_to_store(sites_dir, url)
    return ds, check_store(url)


@pytest.fixture(scope="module")
def monthly(sites_dir, tmp_path_factory):
    url = str(tmp_path_factory.mktemp("sites") / "monthly.zarr")
    ds = sites_to_store(sites_dir, url, monthly=True)
    return ds, check_store(url)


def _site_file(sites_dir: Path, site: str) -> xr.Dataset:
    return xr.load_dataset(sites_dir / f"{site}.nc", decode_times=False)


# -- FLUXNET sites ------------------------------------------------------------------------------
def test_sites_daily_store(daily, sites_dir):
    ds, store = daily
    assert store.attrs["complete"] is True and store.attrs["source"] == "fluxnet_sites"
    assert store.steps_per_year == 365 and store.max_patch_size == 1
    assert store.n_pixels == 8 and store.n_time == 3287
    sd = store.ds
    assert list(sd["site_id"].values) == list(SITES)
    assert np.array_equal(sd["patch"].values, np.arange(8)) and not sd["split"].values.any()
    # units attributes of forcing, predictors and observations
    for v in schema.COORDS + schema.FORCING + schema.PREDICTORS:
        if v.name in sd.variables:
            assert sd[v.name].attrs["units"] == v.units, v.name
    for product, stream in (("gpp_flux", "gpp_flux"), ("reco_flux", "reco_flux"),
                            ("et_flux", "et_flux"), ("lai", "lai"), ("nbe", "nbe")):
        a = sd[f"obs_{product}"].attrs
        assert a["stream"] == stream and a["units"] == schema.STREAMS[schema.STREAM_INDEX[stream]].units
        assert store.products(stream) == [product]
    assert sd["time_by_pixel"].attrs["units"] == "days since 2001-01-01"
    assert sd["co2_by_pixel"].attrs["units"] == "ppm"
    assert sorted(store.attrs["per_pixel_forcing"]) == ["co2", "doy", "time"]  # delta_t shared (1)
    assert np.all(sd["delta_t"].values == 1)
    # one site's series land in its row, unchanged
    i = SITES.index("DE-Hai")
    f = _site_file(sites_dir, "DE-Hai")
    n = f.sizes["time"]
    assert np.array_equal(sd["time_by_pixel"].values[i, :n], f["time"].values)
    assert np.array_equal(sd["doy_by_pixel"].values[i, :n], f["DOY"].values.astype(np.float32))
    np.testing.assert_allclose(sd["t_max"].values[i, :n], f["T2M_MAX"].values, rtol=1e-6)
    np.testing.assert_allclose(sd["co2_by_pixel"].values[i, :n], f["CO2"].values, rtol=1e-6)
    np.testing.assert_allclose(sd["obs_gpp_flux"].values[i, :n], f["GPP"].values, rtol=1e-6)
    np.testing.assert_allclose(sd["obs_nbe"].values[i, :n], f["NBE"].values, rtol=1e-6)
    assert np.array_equal(sd["obs_gpp_flux_weight"].values[i], np.isfinite(f["GPP"].values))
    assert np.all(sd["burned_area"].values == 0)
    # predictors: IGBP one-hot, MAT/MAP/ELEV from the csv
    csv = pd.read_csv(sites_dir / "site_coords.csv").set_index("SITE_ID")
    for j, site in enumerate(SITES):
        pft = IGBP_TO_PFT[csv.loc[site, "IGBP"]]
        assert sd[pft].values[j] == 1 and sum(sd[p].values[j] for p in schema.PREDICTOR_SETS["PFT"]) == 1
        assert sd["MAP"].values[j] == np.float32(csv.loc[site, "MAP"])
        assert sd["elevation"].values[j] == np.float32(csv.loc[site, "ELEV"])
        assert sd["lat"].values[j] == np.float32(csv.loc[site, "lat"])
    assert store.attrs["site_years"]["US-Ha1"] == [1999, 2007]
    # AU-Stp ends 2018-12-30: one padded day, not observed, calendar continued
    k = SITES.index("AU-Stp")
    assert sd["valid_step"].values[k, -1] == 0 and sd["valid_step"].values[k, :-1].all()
    assert sd["obs_lai_weight"].values[k, -1] == 0
    assert sd["doy_by_pixel"].values[k, -1] == 365 and sd["time_by_pixel"].values[k, -1] == 6573
    # time split: 9 years -> the first 5 train, the last 4 test (published get_train_test_sel)
    tt = sd["time_test"].values
    assert store.attrs["site_test_from_year"]["DE-Hai"] == 2006
    first_test = int(np.argmax(tt[i]))
    jan_2006 = (np.datetime64("2006-01-01") - np.datetime64("2001-01-01")).astype(int)
    assert f["time"].values[first_test] == jan_2006
    assert tt[i, :first_test].sum() == 0 and tt[i, first_test:].all()


def test_sites_monthly_aggregation(monthly, sites_dir):
    ds, store = monthly
    sd = store.ds
    assert store.steps_per_year == 12 and store.n_time == 108
    f = _site_file(sites_dir, "DE-Hai")
    i = SITES.index("DE-Hai")
    dates = np.datetime64("2001-01-01") + f["time"].values.astype("timedelta64[D]")
    # hand computation for July 2003 (step 30 of DE-Hai's 2001-2009 record)
    sel = (dates >= np.datetime64("2003-07-01")) & (dates < np.datetime64("2003-08-01"))
    assert sel.sum() == 31
    step = 2 * 12 + 6
    np.testing.assert_allclose(sd["t_max"].values[i, step], f["T2M_MAX"].values[sel].mean(), rtol=1e-5)
    np.testing.assert_allclose(sd["precip"].values[i, step], f["TOTAL_PREC"].values[sel].mean(), rtol=1e-5)
    np.testing.assert_allclose(sd["co2_by_pixel"].values[i, step], f["CO2"].values[sel].mean(), rtol=1e-6)
    gpp = f["GPP"].values[sel]
    assert np.isfinite(gpp).sum() >= 16
    np.testing.assert_allclose(sd["obs_gpp_flux"].values[i, step], np.nanmean(gpp), rtol=1e-5)
    assert sd["obs_gpp_flux_weight"].values[i, step] == 1
    # calendar of that month: mid-July, days since 2001-01-01
    mid = (np.datetime64("2003-07-01") - np.datetime64("2001-01-01")).astype(int) + 15.5
    assert sd["time_by_pixel"].values[i, step] == mid
    assert sd["doy_by_pixel"].values[i, step] == 182 + 15.5  # Jul 1 = doy 182, + half a month
    assert sd["delta_t_by_pixel"].values[i, step] == 31
    assert sd["delta_t_by_pixel"].values[i, 12 * 3 + 1] == 29  # February 2004
    # US-Var: months with some GPP days but fewer than half are gaps with weight 0; months with
    # at least half are the mean of the valid days
    j = SITES.index("US-Var")
    g = _site_file(sites_dir, "US-Var")
    months = (np.datetime64("2001-01-01") + g["time"].values.astype("timedelta64[D]")).astype("datetime64[M]")
    checked = {"gap": 0, "partial": 0}
    for m_idx, m in enumerate(np.unique(months)):
        x = g["GPP"].values[months == m]
        frac = np.isfinite(x).mean()
        if 0 < frac < 0.5:
            assert np.isnan(sd["obs_gpp_flux"].values[j, m_idx])
            assert sd["obs_gpp_flux_weight"].values[j, m_idx] == 0
            checked["gap"] += 1
        elif 0.5 <= frac < 1:
            np.testing.assert_allclose(sd["obs_gpp_flux"].values[j, m_idx], np.nanmean(x), rtol=1e-5)
            assert sd["obs_gpp_flux_weight"].values[j, m_idx] == 1
            checked["partial"] += 1
    assert checked["gap"] >= 3 and checked["partial"] >= 3, checked
    assert store.attrs["monthly_min_valid_fraction"] == 0.5
    assert sd["time_test"].values[i].sum() == 48


def test_sites_weights_from_unc(sites_dir):
    ds = import_sites(sites_dir, only="FR-Pue,DE-Hai", weights_from_unc=True)
    w, v = ds["obs_gpp_flux_weight"].values, ds["obs_gpp_flux"].values
    ok = np.isfinite(v)
    assert np.all(w[~ok] == 0) and np.all(w[ok] > 0)
    np.testing.assert_allclose(w[ok].mean(), 1.0, rtol=1e-5)
    assert np.std(w[ok]) > 0.1


def _reader_rows(url: str):
    store = check_store(url)
    with PatchReader(store, batch.predictor_names(["PFT", "CLIM"])) as r:
        return store, r.read(list(store.patch_ids))


def test_site_store_through_reader(sites_dir, tmp_path):
    """A one-site store shares its calendar: the reader assembles the real forcing."""
    url = str(tmp_path / "frpue.zarr")
    sites_to_store(sites_dir, url, only="FR-Pue")
    store, b = _reader_rows(url)
    assert store.attrs["per_pixel_forcing"] == []
    f = _site_file(sites_dir, "FR-Pue")
    assert b.forcing.shape == (1, 3287, 17) and np.isfinite(b.forcing).all()
    fo = b.forcing[0]
    assert np.array_equal(fo[:, FORCING_INDEX["days"]], f["time"].values.astype(np.float32))
    assert np.array_equal(fo[:, FORCING_INDEX["doy"]], f["DOY"].values.astype(np.float32))
    np.testing.assert_allclose(fo[:, FORCING_INDEX["co2"]], f["CO2"].values, rtol=1e-6)
    np.testing.assert_allclose(fo[:, FORCING_INDEX["lat"]], 43.7413, rtol=1e-6)
    assert np.all(fo[:, FORCING_INDEX["delta_t"]] == 1)
    np.testing.assert_allclose(fo[0, FORCING_INDEX["map_daily"]], 883 / batch.DAYS_PER_YEAR, rtol=1e-6)
    assert b.predictors.shape == (1, 13) and b.predictors[0, schema.PREDICTOR_SETS["PFT"].index("EBF")] == 1
    assert np.array_equal(b.labels.weight["gpp_flux"][0], np.isfinite(f["GPP"].values))


def test_multi_site_store_through_reader(monthly, sites_dir):
    """Sites of different years: the reader must take each site's own days, doy, delta_t, co2."""
    ds, store = monthly
    with PatchReader(store, batch.predictor_names(["PFT", "CLIM"])) as r:
        b = r.read(list(store.patch_ids))
    assert np.isfinite(b.forcing).all()
    for i, site in enumerate(SITES):
        for col, var in (("days", "time_by_pixel"), ("doy", "doy_by_pixel"),
                         ("delta_t", "delta_t_by_pixel"), ("co2", "co2_by_pixel")):
            np.testing.assert_allclose(b.forcing[i, :, FORCING_INDEX[col]],
                                       ds[var].values[i], rtol=1e-6, err_msg=f"{site} {col}")


def _copy_sites(src: Path, dst: Path, sites=("FR-Pue", "DE-Hai")) -> Path:
    dst.mkdir()
    for s in sites:
        shutil.copy(src / f"{s}.nc", dst / f"{s}.nc")
    csv = pd.read_csv(src / "site_coords.csv")
    csv[csv["SITE_ID"].isin(sites)].to_csv(dst / "site_coords.csv", index=False)
    return dst


def _rewrite(path: Path, fn) -> None:
    ds = xr.load_dataset(path, decode_times=False)
    ds = fn(ds)
    path.unlink()
    ds.to_netcdf(path)


def test_sites_bad_inputs(sites_dir, tmp_path):
    d = _copy_sites(sites_dir, tmp_path / "bad")
    # a missing variable
    _rewrite(d / "DE-Hai.nc", lambda ds: ds.drop_vars("TOTAL_PREC"))
    with pytest.raises(DataValidationError, match=r"DE-Hai\.nc.*TOTAL_PREC.*missing"):
        import_sites(d)
    shutil.copy(sites_dir / "DE-Hai.nc", d / "DE-Hai.nc")
    # NaN in forcing: named with its dates and steps
    def gap(ds):
        ds["T2M_MAX"].values[100:103] = np.nan
        return ds
    _rewrite(d / "FR-Pue.nc", gap)
    with pytest.raises(DataValidationError) as e:
        import_sites(d)
    msg = str(e.value)
    assert "FR-Pue.nc" in msg and "T2M_MAX: 3 missing value(s)" in msg
    assert "2001-04-11..2001-04-13 (steps 100..102)" in msg and "gap-free" in msg
    shutil.copy(sites_dir / "FR-Pue.nc", d / "FR-Pue.nc")
    import_sites(d)  # restored: fine
    csv_path = d / "site_coords.csv"
    good_csv = csv_path.read_text()
    # a wrong site id in the csv: no file for it, and a file without a row
    csv_path.write_text(good_csv.replace("DE-Hai", "DE-Hax"))
    with pytest.raises(DataValidationError) as e:
        import_sites(d)
    assert "DE-Hai.nc have no row" in str(e.value)
    assert "DE-Hax of site_coords.csv have no file" in str(e.value)
    # two ids swapped: the coordinates give it away
    swapped = good_csv.replace("DE-Hai", "TMP").replace("FR-Pue", "DE-Hai").replace("TMP", "FR-Pue")
    csv_path.write_text(swapped)
    with pytest.raises(DataValidationError, match=r"wrong SITE_ID in the CSV"):
        import_sites(d)
    # an unknown vegetation class, a missing column
    csv_path.write_text(good_csv.replace(",EBF,", ",XYZ,"))
    with pytest.raises(DataValidationError, match=r"line \d \(FR-Pue\): IGBP class 'XYZ' unknown"):
        import_sites(d)
    csv_path.write_text(good_csv.replace("MAT,", "TEMP,"))
    with pytest.raises(DataValidationError, match=r"column\(s\) \['MAT'\] missing"):
        import_sites(d)
    csv_path.write_text(good_csv)
    with pytest.raises(DifferlandError, match="--test-sites: US-Var not among"):
        import_sites(d, test_sites="US-Var")


def test_interrupted_site_import_leaves_no_valid_store(sites_dir, tmp_path, monkeypatch):
    url = str(tmp_path / "cut.zarr")

    def boom(*a, **k):
        raise RuntimeError("killed while consolidating")

    monkeypatch.setattr(zarr, "consolidate_metadata", boom)
    with pytest.raises(RuntimeError, match="killed"):
        sites_to_store(sites_dir, url, only="FR-Pue", monthly=True)
    monkeypatch.undo()
    problems = validate_store(url)
    assert any("complete is False" in p for p in problems)
    with pytest.raises(DataValidationError):
        check_store(url)
    # killed half-way through the arrays
    url2 = str(tmp_path / "half.zarr")
    real = xr.Dataset.to_zarr

    def half(self, store, **kw):
        names = sorted(self.data_vars)[: len(self.data_vars) // 2]
        kw["encoding"] = {k: v for k, v in kw["encoding"].items() if k in names or k in self.coords}
        real(self[names], store, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_zarr", half)
    with pytest.raises(KeyboardInterrupt):
        sites_to_store(sites_dir, url2, only="FR-Pue", monthly=True)
    monkeypatch.undo()
    assert validate_store(url2)


def test_import_sites_cli_to_gcs(sites_dir, gcs_emulator, capsys):  # noqa: F811
    url = f"{gcs_emulator['url_prefix']}/{uuid.uuid4().hex}/sites.zarr"
    so = json.dumps(gcs_emulator["storage_options"])
    rc = main(["import-sites", "--sites", str(sites_dir), "--out", url, "--monthly",
               "--only", "FR-Pue,DE-Hai", "--test-sites", "DE-Hai", "--storage-options", so])
    assert rc == 0, capsys.readouterr().err
    assert "2 site(s) (0 dev, 1 test), 108 monthly steps" in capsys.readouterr().out
    store = check_store(Location(url, gcs_emulator["storage_options"]))
    assert list(store.ds["site_id"].values) == ["FR-Pue", "DE-Hai"]
    assert list(store.test_patches) == [1] and list(store.ds["split"].values) == [0, 2]
    assert "time_test" not in store.array_names  # split by sites, not by time
    # same calendar, different site CO2: only co2 is per site
    assert store.attrs["per_pixel_forcing"] == ["co2"]
    rc = main(["import-sites", "--sites", str(sites_dir), "--out", url, "--only", "FR-Pue",
               "--storage-options", so])
    assert rc == 1 and "already exists" in capsys.readouterr().err


# -- the global netCDF layout -------------------------------------------------------------------
NLAT, NLON, NT, RUNS = 6, 8, 36, 3


def make_global_files(d: Path, seed: int = 0, north: float = 52.5, west: float = 10.5) -> dict:
    """A tiny global-driver file set in the published layout (6 x 8 grid of 1 degree cells
    from ``north``/``west`` cell centres, 36 months)."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    lat = north - np.arange(NLAT, dtype=np.float64)  # north first
    lon = west + np.arange(NLON, dtype=np.float64)
    g, gt = ("lat", "lon"), ("time", "lat", "lon")
    ocean = np.zeros((NLAT, NLON), bool)
    ocean[0, :2] = True
    days = 15.0 + 30.4375 * np.arange(NT)

    def field(lo, hi, shape=(NLAT, NLON)):
        return rng.uniform(lo, hi, shape)

    v: dict[str, tuple] = {"LAT": (g, np.broadcast_to(lat[:, None], (NLAT, NLON)).copy())}
    pft = rng.dirichlet(np.ones(10), size=(NLAT, NLON))
    for k, n in enumerate(schema.PREDICTOR_SETS["PFT"]):
        v[n] = (g, pft[..., k])
    for name, (lo, hi) in {"MAT": (-5, 25), "MAP": (200, 2000), "elevation": (0, 2000),
                           "canopy_height": (0, 30), "tree_age_000_filled": (5, 200),
                           "BULK_DEN": (1, 1.6), "SAND": (10, 60), "SILT": (10, 40),
                           "CLAY": (5, 30), "GRAVEL": (0, 20)}.items():
        v[name] = (g, field(lo, hi))
    v["SAND"][1][2, 3] = np.nan  # no soil data: left out when SOIL is chosen
    v["DAYS"] = (gt, np.broadcast_to(days[:, None, None], (NT, NLAT, NLON)).copy())
    v["DOY"] = (gt, np.broadcast_to((days % 365.25 + 1)[:, None, None], (NT, NLAT, NLON)).copy())
    for name, (lo, hi) in {"T_min": (-10, 10), "SOLR": (2, 30), "VPD": (0, 30), "PREC": (0, 10),
                           "BURNED_AREA": (0, 0.01)}.items():
        v[name] = (gt, field(lo, hi, (NT, NLAT, NLON)))
    v["T_max"] = (gt, v["T_min"][1] + field(2, 15, (NT, NLAT, NLON)))
    obs = {"LCSPP": (0, 1), "NBE": (-3, 3), "LAI": (0, 6), "LWE_normalized": (-100, 100),
           "agb_yan": (100, 5000), "bgb_yan": (50, 1000), "GFED_FIRE_EMISSION": (0, 1),
           "gpp_fluxnet": (0, 10), "reco_fluxnet": (0, 8), "et_fluxnet": (0, 4), "ET": (0, 5),
           "CAMS_NBE": (-3, 3)}
    for name, (lo, hi) in obs.items():
        x = field(lo, hi, (NT, NLAT, NLON))
        x[rng.uniform(size=x.shape) < 0.2] = np.nan
        v[name] = (gt, x)
    for name in ("gpp_fluxnet", "reco_fluxnet", "et_fluxnet"):
        w = np.where(np.isfinite(v[name][1]), rng.uniform(0.5, 3, (NT, NLAT, NLON)), 0.0)
        v[f"{name}_weight"] = (gt, w)
    v["initial_som"] = (g, field(1000, 20000))
    for name, (dims, x) in v.items():  # ocean: no data at all
        x = np.asarray(x, np.float64)
        x[..., ocean] = np.nan
        v[name] = (dims, x)
    v["T_min"][1][:, 0, 3] = np.nan  # forcing gap at a cell the run index leaves out (NaN)
    attrs = {"T_min": "degC", "T_max": "degC", "SOLR": "MJ m-2 d-1", "VPD": "hPa",
             "PREC": "mm/day", "LAI": "m2/m2", "NBE": "gC/m2/day"}
    ds = xr.Dataset({k: (dims, x, {"units": attrs[k]} if k in attrs else {})
                     for k, (dims, x) in v.items()},
                    coords={"time": ("time", days, {"units": "days since 2001-01-01"}),
                            "lat": ("lat", lat), "lon": ("lon", lon)})
    ds.to_netcdf(d / nc.DRIVER_FILE)

    valid = ~ocean
    valid[5, 7] = False  # bad meteorology
    xr.Dataset({nc.VALID_VAR: (g, valid)}, coords={"lat": lat, "lon": lon}).to_netcdf(d / nc.VALID_FILE)
    # batch index: 2 x 2 blocks of cells, numbered differently in each run
    block = (np.arange(NLAT)[:, None] // 2) * (NLON // 2) + np.arange(NLON)[None, :] // 2
    idx = np.empty((RUNS, NLAT, NLON))
    for r in range(RUNS):
        perm = rng.permutation(block.max() + 1) + 1
        idx[r] = perm[block]
        idx[r][ocean] = np.nan
        idx[r][0, 2] = -1  # a fixed test cell (the paper's negative indices)
        idx[r][0, 3] = np.nan  # left out
    xr.Dataset({nc.RUN_INDEX_VAR: (("run", "lat", "lon"), idx)},
               coords={"lat": lat, "lon": lon}).to_netcdf(d / nc.RUN_INDEX_FILE)
    bulk = np.ones((NLAT, NLON), bool)
    bulk[3, :] = False
    xr.Dataset({nc.BULK_VAR: (g, bulk)}, coords={"lat": lat, "lon": lon}).to_netcdf(d / nc.BULK_FILE)
    # NOAA CSV with comment lines, from 2000 (the importer must start at 2001-01)
    rows = [(y, m, y + (m - 0.5) / 12, 368.0 + 0.2 * ((y - 2000) * 12 + m), 0.1, 0, 0)
            for y in range(2000, 2005) for m in range(1, 13)]
    lines = ["# NOAA global monthly mean CO2", "# more comments"]
    lines += ["year,month,decimal,average,average_unc,trend,trend_unc"]
    lines += [",".join(str(x) for x in r) for r in rows]
    (d / nc.CO2_FILE).write_text("\n".join(lines) + "\n")
    return {"lat": lat, "lon": lon, "vars": v, "idx": idx, "valid": valid, "bulk": bulk,
            "co2": np.array([r[3] for r in rows[12:12 + NT]])}


def published_order(truth: dict, run: int, sets=("PFT", "CLIM", "AGE", "SOIL")):
    """The published calibration's pixel selection, order and train/dev split (evaluate_
    performance.py's), then its test pixels (negative index, split 2), written out again."""
    names = ["LAT"] + [nc.PREDICTOR_VARS[n] for s in sets for n in schema.PREDICTOR_SETS[s]]
    ridx = truth["idx"][run - 1].ravel().copy()
    out = []
    for test in (False, True):
        pm = np.stack([truth["vars"][n][1].ravel() for n in names])
        invalid = np.isnan(ridx) | ~truth["valid"].ravel() | (
            (np.nan_to_num(ridx, nan=-1) >= 0) if test else (np.nan_to_num(ridx, nan=-1) < 0))
        pm[:, invalid] = np.nan
        not_nan = ~(np.isnan(pm).sum(axis=0) > 0)
        flat = np.flatnonzero(not_nan)
        vi = ridx[not_nan]
        shuffle = np.argsort(vi, kind="mergesort")
        out.append((flat[shuffle], vi[shuffle]))
    (flat, svi), (tflat, tsvi) = out
    thr = np.round(np.max(svi) * 0.9).astype(np.int32)
    split = np.r_[(svi > thr).astype(np.int8), np.full(tsvi.size, 2, np.int8)]
    return np.r_[flat, tflat], np.r_[svi, tsvi], split


@pytest.fixture(scope="module")
def global_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("global")
    return d, make_global_files(d)


@pytest.fixture(scope="module")
def global_store(global_files, tmp_path_factory):
    d, truth = global_files
    url = str(tmp_path_factory.mktemp("gstore") / "global.zarr")
    summary = nc.netcdf_to_store(nc.Inputs.in_dir(d), url, run=2, max_patch_size=4)
    return url, check_store(url), summary


def test_netcdf_import(global_files, global_store):
    d, truth = global_files
    url, store, summary = global_store
    sd = store.ds
    flat, svi, split = published_order(truth, run=2)
    assert store.n_pixels == flat.size == NLAT * NLON - 2 - 1 - 1 - 1  # ocean, index NaN, invalid, no soil
    assert (sd["split"].values == 2).sum() == 1  # the test cell (index -1) is kept, as test
    assert store.n_time == NT and store.steps_per_year == 12 and store.max_patch_size == 4
    rows, cols = np.divmod(flat, NLON)
    assert np.array_equal(sd["row"].values, rows) and np.array_equal(sd["col"].values, cols)
    assert np.array_equal(sd["split"].values, split)
    assert np.array_equal(sd["run_simulation_idx"].values, svi)
    # one patch per index value, in index order
    fit = svi >= 0
    n_fit = np.unique(svi[fit]).size
    assert np.array_equal(sd["patch"].values, np.r_[np.unique(svi[fit], return_inverse=True)[1],
                                                   n_fit + np.unique(svi[~fit], return_inverse=True)[1]])
    assert summary["patches"] == np.unique(svi).size
    assert store.attrs["train_dev_threshold"] == int(np.round(svi.max() * 0.9))
    # every run's index, in store pixel order
    assert np.array_equal(sd["run_simulation_idx_runs"].values,
                          truth["idx"].reshape(RUNS, -1)[:, flat].T.astype(np.float32))
    # a known pixel: grid cell (4, 5)
    p = int(np.flatnonzero((rows == 4) & (cols == 5))[0])
    v = truth["vars"]
    np.testing.assert_allclose(sd["t_min"].values[p], v["T_min"][1][:, 4, 5], rtol=1e-6)
    np.testing.assert_allclose(sd["swrad"].values[p], v["SOLR"][1][:, 4, 5], rtol=1e-6)
    np.testing.assert_allclose(sd["lat"].values[p], 48.5)
    np.testing.assert_allclose(sd["lon"].values[p], 15.5)
    np.testing.assert_allclose(sd["MAT"].values[p], v["MAT"][1][4, 5], rtol=1e-6)
    np.testing.assert_allclose(sd["forest_age"].values[p], v["tree_age_000_filled"][1][4, 5], rtol=1e-6)
    np.testing.assert_allclose(sd["time"].values, v["DAYS"][1][:, 4, 5])
    np.testing.assert_allclose(sd["co2"].values, truth["co2"], rtol=1e-6)
    assert np.all(sd["delta_t"].values == 30)
    # labels: values where observed, weight 0 at gaps; fluxnet weights; biomass sum; static som
    lai = v["LAI"][1][:, 4, 5]
    np.testing.assert_allclose(sd["obs_lai"].values[p], lai, rtol=1e-6)
    assert np.array_equal(sd["obs_lai_weight"].values[p], np.isfinite(lai).astype(np.float32))
    gw = v["gpp_fluxnet_weight"][1][:, 4, 5]
    np.testing.assert_allclose(sd["obs_gpp_flux_weight"].values[p], gw, rtol=1e-6)
    np.testing.assert_allclose(sd["obs_biomass"].values[p],
                               v["agb_yan"][1][:, 4, 5] + v["bgb_yan"][1][:, 4, 5], rtol=1e-6)
    assert sd["obs_som"].dims == ("pixel",)
    np.testing.assert_allclose(sd["obs_som"].values[p], v["initial_som"][1][4, 5], rtol=1e-6)
    assert store.products("nbe") == ["nbe", "nbe_cams"] and store.products("sif") == ["sif"]
    assert sd["obs_ewt"].attrs["stream"] == "ewt" and sd["obs_et_gleam"].attrs["units"] == "mm d-1"
    # the bulk mask (row 3 off) removes NBE (both products) and ewt labels, nothing else
    off = rows == 3
    assert off.any() and np.array_equal(sd["assimilate_bulk"].values, (~off).astype(np.int8))
    for prod in ("nbe", "nbe_cams", "ewt"):
        assert not sd[f"obs_{prod}_weight"].values[off].any(), prod
        assert np.isnan(sd[f"obs_{prod}"].values[off]).all()
        assert sd[f"obs_{prod}_weight"].values[~off].any()
    assert sd["obs_lai_weight"].values[off].sum() > 0
    # through the reader: the forcing assembles
    with PatchReader(store, batch.predictor_names(["PFT", "CLIM", "AGE", "SOIL"])) as r:
        b = r.read(list(store.patch_ids))
    assert b.forcing.shape == (flat.size, NT, 17) and np.isfinite(b.forcing).all()
    np.testing.assert_allclose(b.forcing[p, :, FORCING_INDEX["doy"]], v["DOY"][1][:, 4, 5], rtol=1e-6)
    np.testing.assert_allclose(b.forcing[p, :, FORCING_INDEX["days"]], v["DAYS"][1][:, 4, 5], rtol=1e-6)


def _file_backed(a: np.ndarray) -> bool:
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = a.base if isinstance(a, np.ndarray) else None
    return False


def test_netcdf_other_run_sets_and_disk_staging(global_files, tmp_path):
    d, truth = global_files
    inputs = nc.Inputs.in_dir(d)
    mem = nc.import_netcdf(inputs, run=3, predictor_sets=("PFT", "CLIM"), max_patch_size=4, n_time=24)
    flat, svi, split = published_order(truth, run=3, sets=("PFT", "CLIM"))
    assert mem.sizes["pixel"] == flat.size and mem.sizes["time"] == 24  # the no-soil cell is back
    assert "SAND" not in mem and np.array_equal(mem["split"].values, split)
    url = str(tmp_path / "disk.zarr")
    seen = {}
    summary = nc.netcdf_to_store(inputs, url, run=3, predictor_sets=("PFT", "CLIM"), n_time=24,
                                 max_patch_size=4, scratch_dir=str(tmp_path / "scratch"),
                                 on_dataset=lambda ds: seen.update(
                                     memmap=_file_backed(ds["t_max"].values),
                                     files=sorted(p.name for p in (tmp_path / "scratch").rglob("*.npy"))))
    assert summary["staged_on_disk"] and seen["memmap"] and "T_max.npy" in seen["files"]
    assert not any((tmp_path / "scratch").iterdir())  # cleaned up
    disk = check_store(url).ds
    for name in ("t_max", "obs_nbe", "obs_gpp_flux_weight", "obs_som", "patch", "co2"):
        np.testing.assert_array_equal(disk[name].values, mem[name].values, err_msg=name)


def _broken_copy(src: Path, dst: Path, fn=None, name=nc.DRIVER_FILE) -> nc.Inputs:
    shutil.copytree(src, dst)
    if fn is not None:
        _rewrite(dst / name, fn)
    return nc.Inputs.in_dir(dst)


def test_netcdf_bad_inputs(global_files, tmp_path):
    d, truth = global_files
    inp = _broken_copy(d, tmp_path / "a", lambda ds: ds.drop_vars("PREC"))
    expected = r"variable\(s\) PREC missing; expected each with dims \('time', 'lat', 'lon'\)"
    with pytest.raises(DataValidationError, match=rf"(?s){nc.DRIVER_FILE}.*{expected}"):
        nc.import_netcdf(inp, max_patch_size=4)

    def gap(ds):
        ds["T_max"].values[7:9, 4, 5] = np.nan
        return ds
    inp = _broken_copy(d, tmp_path / "b", gap)
    with pytest.raises(DataValidationError) as e:
        nc.import_netcdf(inp, max_patch_size=4)
    msg = str(e.value)
    assert "T_max: 2 missing value(s)" in msg and "lat 48.5, lon 15.5" in msg
    assert "time steps 7..8" in msg and "gap-free" in msg
    inp = nc.Inputs.in_dir(d)
    with pytest.raises(DataValidationError, match=r"run 4 asked for, the file holds runs 1\.\.3"):
        nc.import_netcdf(inp, run=4)
    with pytest.raises(DataValidationError, match=r"more than max_patch_size=3 pixels"):
        nc.import_netcdf(inp, max_patch_size=3)
    with pytest.raises(DifferlandError, match=r"not default products"):
        nc.import_netcdf(inp, skip_products=["lai_copernicus"])
    ds = nc.import_netcdf(inp, max_patch_size=4, skip_products=["sif", "ewt"])
    assert "obs_sif" not in ds and "obs_ewt" not in ds
    inp = _broken_copy(d, tmp_path / "c", lambda ds: ds.isel(lon=slice(0, 7)), name=nc.VALID_FILE)
    with pytest.raises(DataValidationError,
                       match=r"era_valid: .*shape \(6, 7\), expected \(lat, lon\) = \(6, 8\)"):
        nc.import_netcdf(inp, max_patch_size=4)
    inp = _broken_copy(d, tmp_path / "f", lambda ds: ds.assign_coords(lat=ds["lat"] + 40))
    with pytest.raises(DataValidationError, match=r"lat: 3 coordinate value\(s\) outside \[-90, 90\]"):
        nc.import_netcdf(inp, max_patch_size=4)
    inp = _broken_copy(d, tmp_path / "e")
    (tmp_path / "e" / nc.CO2_FILE).write_text("year,month,average\n2001,1,370\n")
    with pytest.raises(DataValidationError, match=r"1 monthly row\(s\) from 2001-01 on, the driver needs 36"):
        nc.import_netcdf(inp, max_patch_size=4)


def test_import_netcdf_cli(global_files, tmp_path, capsys):
    d, _ = global_files
    url = str(tmp_path / "cli.zarr")
    rc = main(["import-netcdf", "--data-dir", str(d), "--out", url, "--run", "1",
               "--max-patch-size", "4"])
    assert rc == 0, capsys.readouterr().err
    assert "months, products" in capsys.readouterr().out
    assert check_store(url).attrs["run"] == 1
    rc = main(["import-netcdf", "--data-dir", str(tmp_path / "nowhere"), "--out",
               str(tmp_path / "x.zarr")])
    assert rc == 1 and "driver file not found" in capsys.readouterr().err
