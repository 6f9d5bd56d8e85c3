"""FLUXNET2015 / ONEFlux FULLSET CSVs (generated here: a DD file and an HH file) -> a site store
through the site importer's builder: unit conversions, QC masking, HH aggregation, each site's
own dates, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from differland_dist.cli.main import main
from differland_dist.data.importers.fluxnet_csv import (
    LAMBDA, UMOL_TO_GC_DAY, import_fluxnet_csv)
from differland_dist.data.store import open_store
from differland_dist.errors import DataValidationError

TABLE = ("SITE_ID,cluster,lon,lat,ELEV,MAP,MAT,IGBP,start_year,end_year\n"
         "XX-Dd1,c1,10.5,50.5,300,800,8.0,DBF,2004,2005\n"
         "XX-Hh1,c2,-100.5,40.5,1000,400,10.0,GRA,2010,2010\n")


def _dd(rng) -> pd.DataFrame:
    days = pd.date_range("2004-01-01", "2005-12-31", freq="D")
    n = days.size
    df = pd.DataFrame({
        "TIMESTAMP": days.strftime("%Y%m%d").astype(int),
        "TA_F": rng.uniform(-5, 25, n), "SW_IN_F": rng.uniform(20, 300, n),
        "VPD_F": rng.uniform(0, 20, n), "P_F": rng.uniform(0, 10, n),
        "CO2_F_MDS": rng.uniform(370, 390, n),
        "GPP_NT_VUT_REF": rng.uniform(0, 10, n), "RECO_NT_VUT_REF": rng.uniform(0, 8, n),
        "NEE_VUT_REF": rng.uniform(-5, 3, n), "NEE_VUT_REF_QC": rng.uniform(0, 1, n),
        "NEE_VUT_REF_JOINTUNC": rng.uniform(0.2, 1, n),
        "LE_F_MDS": rng.uniform(0, 150, n), "LE_F_MDS_QC": rng.uniform(0, 1, n)})
    df.loc[5, "CO2_F_MDS"] = -9999  # a CO2 gap: interpolated
    df.loc[7, "GPP_NT_VUT_REF"] = -9999  # an observation gap
    return df


def _hh(rng) -> pd.DataFrame:
    t = pd.date_range("2010-01-01", "2010-12-31 23:30", freq="30min")
    n = t.size
    return pd.DataFrame({
        "TIMESTAMP_START": t.strftime("%Y%m%d%H%M").astype(np.int64),
        "TIMESTAMP_END": (t + pd.Timedelta("30min")).strftime("%Y%m%d%H%M").astype(np.int64),
        "TA_F": rng.uniform(-5, 30, n), "SW_IN_F": rng.uniform(0, 800, n),
        "VPD_F": rng.uniform(0, 30, n), "P_F": rng.uniform(0, 0.5, n),
        "CO2_F_MDS": rng.uniform(380, 400, n),
        "GPP_NT_VUT_REF": rng.uniform(0, 20, n), "RECO_NT_VUT_REF": rng.uniform(0, 8, n),
        "NEE_VUT_REF": rng.uniform(-15, 8, n), "NEE_VUT_REF_QC": rng.integers(0, 4, n),
        "LE_F_MDS": rng.uniform(0, 300, n), "LE_F_MDS_QC": rng.integers(0, 2, n)})


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("flx")
    rng = np.random.default_rng(0)
    (d / "site_coords.csv").write_text(TABLE)
    dd, hh = _dd(rng), _hh(rng)
    dd.to_csv(d / "FLX_XX-Dd1_FLUXNET2015_FULLSET_DD_2004-2005_1-4.csv", index=False)
    hh.to_csv(d / "FLX_XX-Hh1_FLUXNET2015_FULLSET_HH_2010-2010_1-4.csv", index=False)
    return d, dd, hh


def test_fluxnet_csv_store(flux_dir, tmp_path):
    d, dd, hh = flux_dir
    url = str(tmp_path / "flx.zarr")
    assert main(["import-fluxnet", "--sites", str(d), "--out", url]) == 0
    s = open_store(url).ds  # validated
    assert list(s.site_id.values) == ["XX-Dd1", "XX-Hh1"] and s.sizes["time"] == 731
    assert s.attrs["source"] == "fluxnet2015_csv"
    # DD: conversions and QC
    np.testing.assert_allclose(s.swrad.values[0], dd.SW_IN_F * 0.0864, rtol=1e-6)
    np.testing.assert_allclose(s.t_min.values[0], dd.TA_F, rtol=1e-6)
    good = dd.NEE_VUT_REF_QC.values >= 0.5
    want = np.where(good, dd.NEE_VUT_REF.values, np.nan)
    np.testing.assert_allclose(s.obs_nbe.values[0], want, rtol=1e-6)
    assert np.isnan(s.obs_gpp_flux.values[0, 7]) and (s.obs_nbe_weight.values[0, ~good] == 0).all()
    et = np.where(dd.LE_F_MDS_QC >= 0.5, dd.LE_F_MDS / LAMBDA * 86400, np.nan)
    np.testing.assert_allclose(s.obs_et_flux.values[0], et, rtol=1e-5)
    co2 = s.co2_by_pixel.values[0]
    assert co2[5] == pytest.approx((dd.CO2_F_MDS[4] + dd.CO2_F_MDS[6]) / 2, rel=1e-6)
    # HH: days aggregated (min/max temperature, summed rain, mean fluxes in gC m-2 d-1)
    day = pd.to_datetime(hh.TIMESTAMP_START.astype(str), format="%Y%m%d%H%M").dt.floor("D")
    g = hh.groupby(day.values)
    np.testing.assert_allclose(s.t_min.values[1, :365], g.TA_F.min(), rtol=1e-6)
    np.testing.assert_allclose(s.t_max.values[1, :365], g.TA_F.max(), rtol=1e-6)
    np.testing.assert_allclose(s.precip.values[1, :365], g.P_F.sum(), rtol=1e-5)
    frac = g.NEE_VUT_REF_QC.apply(lambda q: np.mean(q <= 1)).values
    gpp = np.where(frac >= 0.5, g.GPP_NT_VUT_REF.mean().values * UMOL_TO_GC_DAY, np.nan)
    np.testing.assert_allclose(s.obs_gpp_flux.values[1, :365], gpp, rtol=1e-5)
    assert (s.valid_step.values[1, 365:] == 0).all()  # padded after its one year
    # each site's own dates
    t = s.time_by_pixel.values
    assert t[0, 0] == (np.datetime64("2004-01-01") - np.datetime64("2001-01-01")).astype(int)
    assert t[1, 0] == (np.datetime64("2010-01-01") - np.datetime64("2001-01-01")).astype(int)


def test_fluxnet_csv_errors(flux_dir, tmp_path):
    d, dd, _ = flux_dir
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "site_coords.csv").write_text(TABLE.splitlines()[0] + "\n" + TABLE.splitlines()[1] + "\n")
    f = bad / "FLX_XX-Dd1_FLUXNET2015_FULLSET_DD_2004-2005_1-4.csv"
    dd.drop(columns=["LE_F_MDS_QC"]).to_csv(f, index=False)
    with pytest.raises(DataValidationError, match="LE_F_MDS_QC missing"):
        import_fluxnet_csv(bad)
    gap = dd.copy()
    gap.loc[10, "TA_F"] = -9999
    gap.to_csv(f, index=False)
    with pytest.raises(DataValidationError, match=r"TA_F: 1 missing value\(s\) \(-9999\) from 2004-01-11"):
        import_fluxnet_csv(bad)
    f.unlink()
    with pytest.raises(Exception, match="no FLX_XX-Dd1_FLUXNET2015_FULLSET_DD"):
        import_fluxnet_csv(bad)
