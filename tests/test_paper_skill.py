"""The paper's per-pixel skill maps (issue 16, point 5; ``evaluate_performance.py`` of
JianingFang/DifferLand_Global): the pure functions of ``differland_dist.evaluation.skill_maps``
against scipy / numpy / xarray computations, and ``evaluate --conventions paper`` writing them
into ``evaluation.zarr`` (CF-checked), block by block."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from cf_check import cf_problems, unexpected
from differland_dist.evaluation import metrics as M
from differland_dist.evaluation import skill_maps as SM
from test_paper_parity import paper_output  # noqa: F401 - the module's fixture (no training)
from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures


def _reference_cor(sim, obs):
    """lag_linregress_3D's correlation, written with xarray's NaN-skipping reductions as the
    reference evaluates it: own-side means and stds, covariance over the common steps / n."""
    x = xr.DataArray(sim.T, dims=("time", "pixel"))
    y = xr.DataArray(obs.T, dims=("time", "pixel"))
    n = (x.notnull() & y.notnull()).sum("time")
    cov = ((x - x.mean("time")) * (y - y.mean("time"))).sum("time") / n
    return (cov / (x.std("time") * y.std("time"))).values


def test_correlation_rmse_and_swapped_r2():
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(6, 40))
    sim = 0.7 * obs + rng.normal(scale=0.5, size=obs.shape) + 1.0
    # gap-free: Pearson's r
    got = SM.paper_correlation(sim, obs)
    np.testing.assert_allclose(got, [np.corrcoef(sim[i], obs[i])[0, 1] for i in range(6)], rtol=1e-12)
    # gaps in the observations only: the reference's own-side moments, not Pearson
    obs[0, :15] = np.nan
    obs[1, ::3] = np.nan
    obs[2, :39] = np.nan                     # one common step: NaN
    obs[3] = np.nan                          # none
    got = SM.paper_correlation(sim, obs)
    ref = _reference_cor(sim, obs)
    np.testing.assert_allclose(got[[0, 1, 4, 5]], ref[[0, 1, 4, 5]], rtol=1e-12)
    assert np.isnan(got[2]) and np.isnan(got[3])
    ok = np.isfinite(obs[0])
    assert abs(got[0] - np.corrcoef(sim[0, ok], obs[0, ok])[0, 1]) > 1e-3  # differs from Pearson
    # rmse and r2_score(sim, obs) over the common steps
    r = SM.rmse(sim, obs)
    r2 = SM.swapped_r2(sim, obs)
    for i in (0, 1, 4):
        ok = np.isfinite(obs[i])
        s, o = sim[i, ok], obs[i, ok]
        assert r[i] == pytest.approx(np.sqrt(np.mean((s - o) ** 2)), rel=1e-12)
        assert r2[i] == pytest.approx(1 - np.sum((o - s) ** 2) / np.sum((s - s.mean()) ** 2), rel=1e-12)
    assert np.isnan(r[3]) and np.isnan(r2[3])


def test_trend_and_p_value_match_linregress():
    rng = np.random.default_rng(2)
    T = 60
    t = np.arange(T)
    y = np.stack([0.02 * t + rng.normal(size=T),          # clear upward trend
                  -0.001 * t + rng.normal(size=T),        # weak downward, p large
                  np.full(T, 3.0),                         # constant: slope 0, p NaN
                  rng.normal(size=T)])
    y[1, 5:20] = np.nan                                   # gaps: the step index is kept
    y[3, 2:] = np.nan                                     # two points: slope, no p-value
    slope, p = SM.trend(y, 12)
    for i in range(3):
        ok = np.isfinite(y[i])
        lr = stats.linregress(t[ok], y[i, ok])
        assert slope[i] == pytest.approx(12 * lr.slope, rel=1e-9, abs=1e-12)
        assert p[i] == pytest.approx(lr.pvalue, rel=1e-9, nan_ok=True)
    assert p[0] < 0.01 and p[1] > 0.05 and slope[2] == 0 and np.isnan(p[2])
    assert slope[3] == pytest.approx(12 * (y[3, 1] - y[3, 0])) and np.isnan(p[3])


def test_anomaly_is_the_known_anomaly():
    """trend + seasonal cycle + e, with e of zero mean in every calendar month and no trend:
    the anomaly is e. With gaps it is the reference's recipe (polyfit on the finite steps,
    then the monthly means of the detrended values)."""
    rng = np.random.default_rng(3)
    Y = 5
    t = np.arange(12 * Y)
    month, year = t % 12, t // 12
    e = rng.normal(size=t.size)
    for m in range(12):
        e[month == m] -= e[month == m].mean()
    k = year - year.mean()                        # zero monthly means: keeps e's
    e -= (e @ k) / (k @ k) * k                    # no trend left in e
    cycle = np.cos(2 * np.pi * (month - 5.5) / 12)  # symmetric: no trend of its own
    x = (2.0 + 0.05 * t + 1.5 * cycle + e)[None, :]
    np.testing.assert_allclose(SM.anomalies(x, month)[0], e, atol=1e-10)
    # gaps: as evaluate_performance.py's detrend_then_remove_msc
    xg = x.copy()
    xg[0, [3, 4, 17, 40]] = np.nan
    ok = np.isfinite(xg[0])
    b, a = np.polyfit(t[ok], xg[0, ok], 1)
    d = xg[0] - (a + b * t)
    clim = np.array([np.nanmean(d[month == m]) for m in range(12)])
    np.testing.assert_allclose(SM.anomalies(xg, month)[0], d - clim[month], atol=1e-10, equal_nan=True)
    assert np.isnan(SM.anomalies(xg, month)[0, 3])


def test_calendar_and_annual_means():
    times = np.arange("2002-07", "2004-03", dtype="datetime64[M]").astype("datetime64[ns]")
    year, month = SM.calendar(times, 12)
    assert year[0] == 2002 and month[0] == 6 and year[-1] == 2004 and month[-1] == 1
    x = np.arange(times.size, dtype=float)[None, :]
    x[0, 0] = np.nan
    a = SM.annual_means(x, year)[0]               # partial years, as resample("1YE").mean()
    assert a == pytest.approx([np.mean(np.arange(1, 6)), np.mean(np.arange(6, 18)), 18.5])
    y2, m2 = SM.calendar(np.arange(5.0), 12, first_step=22)   # undecoded: from the store's start
    assert list(y2) == [1, 1, 2, 2, 2] and list(m2) == [10, 11, 0, 1, 2]


def test_coarsening_to_4x5():
    """On a 0.25-degree band, the plain mean of the finite cells of each 16 x 20 block (the
    reference's coarsen_numpy); on any grid, the 4x5 cell holding the pixel centre."""
    rng = np.random.default_rng(4)
    lat = 89.875 - 0.25 * np.arange(32)           # two 4-degree rows from 90 N
    lon = -179.875 + 0.25 * np.arange(60)         # three 5-degree columns from 180 W
    v = rng.normal(size=(32, 60, 3))
    v[rng.random(v.shape) < 0.3] = np.nan
    v[:16, :20] = np.nan                          # a block without any value
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    got = SM.coarsen_4x5(v.reshape(-1, 3), la.ravel(), lo.ravel())
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanmean(v.reshape(2, 16, 3, 20, 3), axis=(1, 3))
    assert got.shape == (45, 72, 3)
    np.testing.assert_allclose(got[:2, :3], want, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[:2, :3][0, 0]).all() and np.isnan(got[2:]).all() and np.isnan(got[:, 3:]).all()
    g = SM.coarse_grid()
    assert g["lat"][0] == 88 and g["lat"][-1] == -88 and g["lon"][0] == -177.5
    assert list(g["lat_bnds"][0]) == [90, 86] and list(g["lon_bnds"][-1]) == [175, 180]
    # a 15-degree pixel centre (67.5 N, 7.5 E) lies in row 5 (70..66 N), column 37 (5..10 E)
    assert SM.cell_index(np.array([67.5]), np.array([7.5]))[0] == 5 * 72 + 37
    assert SM.cell_index(np.array([0.0]), np.array([180.0]))[0] == 22 * 72  # lon 180 = 180 W
    # block-wise accumulation equals the whole
    cells = SM.cell_index(la.ravel(), lo.ravel())
    acc = SM.CoarseMeans(cells, 3, names=("x",))
    for part in np.array_split(np.arange(cells.size), 7):
        acc.add({"x": v.reshape(-1, 3)[part]}, cells[part])
    np.testing.assert_allclose(acc.result()["x"], got.reshape(-1, 3)[acc.cells], rtol=1e-12,
                               equal_nan=True)


def test_block_maps_blockwise_equal_whole_and_paper_scores_accumulate():
    from differland_dist.evaluation.paper_scores import PaperScores

    rng = np.random.default_rng(5)
    P, T = 37, 48
    obs = rng.normal(size=(P, T)) + np.sin(np.arange(T) / 2)
    sim = obs + rng.normal(scale=0.4, size=(P, T))
    obs[rng.random((P, T)) < 0.2] = np.nan
    obs[3] = np.nan
    year, month = np.arange(T) // 12, np.arange(T) % 12
    whole = SM.block_maps(sim, obs, year, month, 12)
    parts = [SM.block_maps(sim[s], obs[s], year, month, 12)
             for s in (slice(0, 5), slice(5, 30), slice(30, P))]
    for k in SM.MAPS:
        np.testing.assert_allclose(np.concatenate([p[k] for p in parts]), whole[k], rtol=1e-6,
                                   equal_nan=True, err_msg=k)
        assert whole[k].shape == (P,) and whole[k].dtype == np.float32
    assert np.isnan(whole["r_monthly"][3]) and whole["n_obs"][3] == 0
    assert np.isfinite(whole["r_anomaly"][:3]).all() and np.isfinite(whole["trend_p_obs"][:3]).all()
    acc = PaperScores()
    for s in (slice(0, 10), slice(10, 11), slice(11, P)):
        acc.add(obs[s], sim[s])
    got, want = acc.result(), M.paper_scores(obs, sim)
    assert got["n"] == want["n"] and got["n_units"] == want["n_units"] == P - 1
    for view in ("flat", "spatial", "temporal_nse", "temporal_rmse"):
        for k, v in want[view].items():
            assert got[view][k] == pytest.approx(v, rel=1e-10), (view, k)


def test_evaluate_writes_paper_skill_maps(paper_output, small_ds, tmp_path):  # noqa: F811
    """evaluate --conventions paper (no warm-up: 2 years) writes every map into evaluation.zarr
    on the grid and on the 4x5 grid, equal to the whole-array computation (read in blocks of 8
    pixels); CF passes. Block size independence: test_block_maps_blockwise_equal_whole_and_paper_scores_accumulate."""
    from differland_dist.evaluation.evaluate import EvaluationOptions, evaluate

    opts = dict(figures=False, conventions="paper", paper_warm_up=0)
    r = evaluate(paper_output, out=str(tmp_path / "ev"),
                 options=EvaluationOptions(block_pixels=8, **opts))
    p = xr.open_zarr(str(tmp_path / "ev" / "evaluation.zarr"), zarr_format=3, consolidated=True)
    z = xr.open_zarr(paper_output, zarr_format=3, consolidated=True)
    rows, cols = z.row.values, z.col.values
    year, month = SM.calendar(z.time.values, 12)
    w = small_ds["obs_lai_weight"].values
    obs = np.where(w > 0, small_ds["obs_lai"].values, np.nan)
    want = SM.block_maps(z.lai.values, obs, year, month, 12)
    for k in SM.MAPS:
        v = p[f"paper_lai_{k}"]
        assert v.dims == ("lat", "lon") and v.attrs["units"] and v.attrs["long_name"]
        np.testing.assert_allclose(v.values[rows, cols], want[k], rtol=1e-6, equal_nan=True, err_msg=k)
    assert p.paper_lai_trend_sim.attrs["units"] == "m2 m-2 yr-1"
    assert np.isfinite(p.paper_lai_r_annual.values[rows, cols]).any()       # 2 years
    assert np.isfinite(p.paper_lai_r_anomaly.values[rows, cols]).any()
    for metric in ("sif", "agb", "et", "water"):
        assert f"paper_{metric}_r_monthly" in p, metric
    assert "paper_vod_r_monthly" not in p and "paper_fire_r_monthly" not in p   # vod off; fire: none
    # nbe: means of the pixels' series per 4x5 cell, then the maps
    wn = small_ds["obs_nbe_weight"].values
    on = np.where(wn > 0, small_ds["obs_nbe"].values, np.nan)
    lat, lon = small_ds["lat"].values, small_ds["lon"].values
    co = SM.coarsen_4x5(on, lat, lon).reshape(-1, on.shape[1])
    cs = SM.coarsen_4x5(z.nbe.values, lat, lon).reshape(-1, on.shape[1])
    occ = np.unique(SM.cell_index(lat, lon))
    want = SM.block_maps(cs[occ], co[occ], year, month, 12)
    for k in SM.MAPS:
        v = p[f"paper_nbe_{k}"]
        assert v.dims == ("lat_4x5", "lon_4x5")
        np.testing.assert_allclose(v.values.ravel()[occ], want[k], rtol=1e-6, equal_nan=True, err_msg=k)
    assert np.isnan(np.delete(p.paper_nbe_rmse_monthly.values.ravel(), occ)).all()
    assert p.lat_4x5.attrs["bounds"] == "lat_4x5_bnds" and p.lat_4x5_bnds.shape == (45, 2)
    # the summary in evaluation.json
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    sk = saved["paper_conventions"]["skill_maps"]
    assert sk["pixel"]["lai"]["r_monthly"]["median"] == pytest.approx(
        float(np.nanmedian(p.paper_lai_r_monthly.values)), rel=1e-6)
    assert sk["coarse_4x5"]["nbe"]["n_cells"] == occ.size
    assert "paper_lai_r_monthly" in r["products"]["variables"]
    md = (tmp_path / "ev" / "evaluation.md").read_text()
    assert "### Per-pixel skill maps" in md and "| lai r_monthly |" in md and "| nbe rmse_monthly |" in md
    # CF 1.8, like every output
    assert unexpected(cf_problems(p, str(tmp_path), "evaluation"), ()) == []
