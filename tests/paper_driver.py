"""A generated driver set in the exact layout of the paper's published data (DifferLand_Global).

:func:`write_paper_driver` writes, into one directory, the seven files the paper's users
download: ``differland_global_driver_v6.nc`` (0.25 degree, 720 x 1440, north first),
``run_simulation_idx_v6.nc`` (100 runs), ``era_valid_v6.nc``, ``assimilate_bulk_variable_v6.nc``,
the NOAA CO2 CSV and ``predictor_mean_df_v6.csv`` / ``predictor_std_df_v6.csv``. As in the
published data:

* land is the real land mask (``global_land_mask``, GLOBE 1 km) at the cell centres;
* vegetation-type fractions are MODIS MCD12C1-style **percentages** (units ``%``);
* the batch index groups pixels by 4 x 5 degree CMS-Flux cells (16 x 20 cells of 0.25 degree =
  320 pixels, the published batch size); a fixed tenth of the land cells are test cells with
  negative indices -1, -2, ... in every run; each run numbers the other cells 1..n in its own
  random order (so the 100 runs share their batches and differ in train/dev);
* the CSVs hold, per run r (row r-1), the mean and std of every predictor (and ``LAT``,
  ``LAT_SIGMOID``) over that run's training pixels; row 100 over train + dev.

``valid_box`` = (south, north, west, east) degrees limits ``era_valid`` (and the filled values)
to a box, so a test imports a few thousand pixels of the full grid; ``None`` fills all land
(the benchmark). Temporal variables are written in blocks of months, so memory stays at one
block whatever ``n_months``. ``golden`` places given standardised predictors (P, 1 + 20, the
golden file's ``net_predictors``) at the first P imported training pixels of run 1 and writes
the run-1 CSV row they were standardised with (a chosen mean/std that keeps the raw values in
range), so a test can compare the imported network's parameters with the golden ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

RES = 0.25
NLAT, NLON = 720, 1440
N_RUNS = 100
CELL_ROWS, CELL_COLS = 16, 20  # 4 x 5 degrees: the published batches (<= 320 pixels)
DRIVER_FILE = "differland_global_driver_v6.nc"
RUN_INDEX_FILE = "run_simulation_idx_v6.nc"
VALID_FILE = "era_valid_v6.nc"
BULK_FILE = "assimilate_bulk_variable_v6.nc"
CO2_FILE = "co2_mm_gl_01_23.csv"
MEAN_CSV, STD_CSV = "predictor_mean_df_v6.csv", "predictor_std_df_v6.csv"
PFT = ("NF", "DBF", "EBF", "MF", "SH", "SAV", "GRA", "WET", "CRO", "NVG")
#: Static predictors other than PFT: driver name -> (low, high, units).
STATIC = {"MAT": (-20, 30, "degC"), "MAP": (50, 3000, "mm yr-1"), "elevation": (0, 3000, "m"),
          "canopy_height": (0, 40, "m"), "tree_age_000_filled": (5, 300, "yr"),
          "BULK_DEN": (1.0, 1.6, "kg dm-3"), "SAND": (5, 70, "%"), "SILT": (5, 50, "%"),
          "CLAY": (5, 40, "%"), "GRAVEL": (0, 30, "%")}
#: The paper's full predictor list (without the hemisphere feature), in network order.
PREDICTORS = (*PFT, "MAT", "MAP", "elevation", "canopy_height", "tree_age_000_filled",
              "BULK_DEN", "SAND", "SILT", "CLAY", "GRAVEL")
#: Monthly (time, lat, lon) variables: name -> (low, high, units, gap fraction).
TEMPORAL = {
    "T_min": (-15, 15, "degC", 0), "T_max": (0, 0, "degC", 0), "SOLR": (2, 28, "MJ m-2 d-1", 0),
    "VPD": (0.5, 25, "hPa", 0), "PREC": (0, 8, "mm/day", 0), "BURNED_AREA": (0, 0.005, "1", 0),
    "LCSPP": (0, 1, "1", 0.2), "NBE": (-1, 1, "gC/m2/day", 0.1), "LAI": (0.1, 5, "m2/m2", 0.2),
    "LWE_normalized": (-80, 80, "mm", 0.1), "agb_yan": (200, 6000, "gC m-2", 0.3),
    "bgb_yan": (50, 1500, "gC m-2", 0.3), "GFED_FIRE_EMISSION": (0, 0.2, "gC/m2/day", 0.1),
    "gpp_fluxnet": (0, 8, "gC/m2/day", 0.99), "reco_fluxnet": (0, 6, "gC/m2/day", 0.99),
    "et_fluxnet": (0, 3, "mm/day", 0.99), "ET": (0, 4, "mm/day", 0.2),
}


def grid() -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre latitudes (north first) and longitudes (west first) of the 0.25 degree grid."""
    return 90 - RES / 2 - RES * np.arange(NLAT), -180 + RES / 2 + RES * np.arange(NLON)


def land_mask() -> np.ndarray:
    """(720, 1440) bool: the real land mask at the cell centres."""
    from global_land_mask import globe

    lat, lon = grid()
    return globe.is_land(np.repeat(lat[:, None], NLON, 1), np.repeat(lon[None, :], NLAT, 0))


def _write(path: Path, variables: dict, lat, lon, time=None, run=None, zlib=True) -> None:
    """A netCDF4 file: ``variables`` name -> (dims, array or writer, attrs); a writer is called
    with the netCDF variable and fills it block by block."""
    import netCDF4

    tmp = path.with_name(path.name + ".part")
    with netCDF4.Dataset(tmp, "w") as ds:
        if time is not None:
            ds.createDimension("time", len(time))
            t = ds.createVariable("time", "f8", ("time",))
            t[:] = time
            t.units = "days since 2001-01-01"
        if run is not None:
            ds.createDimension("run", run)
        ds.createDimension("lat", NLAT)
        ds.createDimension("lon", NLON)
        for name, vals, units in (("lat", lat, "degrees_north"), ("lon", lon, "degrees_east")):
            v = ds.createVariable(name, "f8", (name,))
            v[:] = vals
            v.units = units
        for name, (dims, data, attrs) in variables.items():
            dtype = "u1" if getattr(data, "dtype", None) == bool else "f4"
            chunks = [1 if d in ("time", "run") else (NLAT if d == "lat" else NLON) for d in dims]
            v = ds.createVariable(name, dtype, dims, zlib=zlib, complevel=1, chunksizes=chunks,
                                  fill_value=False)
            for k, a in attrs.items():
                setattr(v, k, a)
            if callable(data):
                data(v)
            else:
                v[:] = data.astype(np.uint8) if dtype == "u1" else data
    os.replace(tmp, path)


def write_paper_driver(out: str | os.PathLike, n_months: int = 24, seed: int = 0,
                       valid_box: tuple[float, float, float, float] | None = (46.0, 54.0, 0.0, 20.0),
                       golden: np.ndarray | None = None, zlib: bool = True,
                       block_months: int = 12) -> dict:
    """Write the seven files into ``out``; returns facts a test checks against (see module doc).

    Returns a dict: ``land`` (720, 1440) bool, ``valid`` bool, ``index`` (100, 720, 1440)
    float32, ``test_cells`` (number of test cells), ``golden_cells`` (flat grid indices of the
    golden pixels, or None), ``n_months``, ``files`` (name -> path).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lat, lon = grid()
    land = land_mask()
    lat2d = np.repeat(lat[:, None], NLON, 1)
    lon2d = np.repeat(lon[None, :], NLAT, 0)
    valid = land & (lat2d > -60)
    if valid_box is not None:
        s, n, w, e = valid_box
        valid &= (lat2d > s) & (lat2d < n) & (lon2d > w) & (lon2d < e)
    filled = valid  # where the driver holds values (elsewhere NaN: small files)
    n_fill = int(filled.sum())

    # -- batch index: 4 x 5 degree cells; fixed negative test cells; each run renumbers the rest
    cell = (np.arange(NLAT)[:, None] // CELL_ROWS) * (NLON // CELL_COLS) + np.arange(NLON)[None, :] // CELL_COLS
    land_cells = np.unique(cell[land])
    valid_cells = np.unique(cell[valid])
    n_test = max(1, int(round(0.1 * land_cells.size)))
    test = set(rng.choice(land_cells, n_test, replace=False).tolist())
    if not test & set(valid_cells.tolist()):  # a test cell where the data are
        test.add(int(valid_cells[rng.integers(valid_cells.size)]))
    test_cells = np.array(sorted(test))
    fit_cells = np.setdiff1d(land_cells, test_cells)
    index = np.full((N_RUNS, NLAT, NLON), np.nan, np.float32)
    cell_value = np.full(cell.max() + 1, np.nan, np.float32)
    cell_value[test_cells] = -(1 + np.arange(test_cells.size))
    for r in range(N_RUNS):
        cv = cell_value.copy()
        cv[fit_cells] = 1 + rng.permutation(fit_cells.size)
        index[r] = np.where(land, cv[cell], np.nan)

    # -- static predictors
    static: dict[str, np.ndarray] = {"LAT": lat2d.astype(np.float32)}
    pft = rng.dirichlet(np.full(10, 0.5), size=n_fill) * 100.0
    for k, n in enumerate(PFT):
        x = np.full((NLAT, NLON), np.nan, np.float32)
        x[filled] = pft[:, k]
        static[n] = x
    for n, (lo, hi, _) in STATIC.items():
        x = np.full((NLAT, NLON), np.nan, np.float32)
        x[filled] = rng.uniform(lo, hi, n_fill)
        static[n] = x
    static["MAT"][filled] = np.clip(27 - 0.5 * np.abs(lat2d[filled]) + rng.normal(0, 2, n_fill), -20, 30)
    static["initial_som"] = np.where(filled, rng.uniform(2000, 30000, (NLAT, NLON)), np.nan).astype(np.float32)

    golden_cells = None
    if golden is not None:
        golden = np.asarray(golden, np.float64)
        r1 = index[0][filled]
        cand = np.flatnonzero(filled.ravel())[np.isfinite(r1) & (r1 >= 0)]
        golden_cells = cand[np.argsort(index[0].ravel()[cand], kind="mergesort")][: golden.shape[0]]
        g_mean, g_std = {}, {}
        for j, n in enumerate(PREDICTORS):
            lo, hi = (0.0, 100.0) if n in PFT else STATIC[n][:2]
            g_mean[n], g_std[n] = (lo + hi) / 2, (hi - lo) / 2 / 4.5  # |golden| < 4.5
            static[n].ravel()[golden_cells] = g_mean[n] + golden[:, 1 + j] * g_std[n]

    # -- the CSVs: per run, training-pixel statistics (the published calibration's rule)
    sig = 1 / (1 + np.exp(-lat2d.astype(np.float64)))
    cols = {"LAT": lat2d, "LAT_SIGMOID": sig, **{n: static[n] for n in PREDICTORS}}
    keep = valid.copy()
    for n in PREDICTORS:
        keep &= np.isfinite(static[n])
    rows_mean, rows_std = [], []
    for r in range(N_RUNS + 1):
        idx = index[min(r, N_RUNS - 1)][keep]
        fit = idx >= 0
        thr = np.round(idx[fit].max() * 0.9)
        sel = fit & (idx <= thr) if r < N_RUNS else fit
        rows_mean.append({c: float(np.asarray(v[keep][sel], np.float64).mean()) for c, v in cols.items()})
        rows_std.append({c: float(np.asarray(v[keep][sel], np.float64).std()) for c, v in cols.items()})
    if golden is not None:
        rows_mean[0].update(g_mean)
        rows_std[0].update(g_std)
    import pandas as pd

    pd.DataFrame(rows_mean).to_csv(out / MEAN_CSV, index=False)
    pd.DataFrame(rows_std).to_csv(out / STD_CSV, index=False)

    # -- monthly variables, written block by block
    days = 15.0 + 30.4375 * np.arange(n_months)
    doy = (days % 365.25) + 1

    def monthly(name):
        lo, hi, _, gap = TEMPORAL.get(name, (0, 0, "", 0))

        def fill(v):
            for s in range(0, n_months, block_months):
                e = min(s + block_months, n_months)
                blk = np.full((e - s, NLAT, NLON), np.nan, np.float32)
                b_rng = np.random.default_rng([seed, s, sum(map(ord, name))])
                if name == "T_max":
                    tmin = monthly_values["T_min"](s, e, n_fill)
                    vals = tmin + b_rng.uniform(3, 15, (e - s, n_fill))
                elif name in ("DAYS", "DOY"):
                    vals = np.repeat((days if name == "DAYS" else doy)[s:e, None], n_fill, 1)
                else:
                    vals = monthly_values[name](s, e, n_fill) if name == "T_min" else \
                        b_rng.uniform(lo, hi, (e - s, n_fill))
                    if gap:
                        vals[b_rng.uniform(size=vals.shape) < gap] = np.nan
                blk[:, filled] = vals
                v[s:e] = blk
        return fill

    def tmin_values(s, e, n):  # reproducible per block, so T_max can be built on it
        return np.random.default_rng([seed, s, 7]).uniform(-15, 15, (e - s, n))
    monthly_values = {"T_min": tmin_values}

    def weight(name):
        def fill(v):
            for s in range(0, n_months, block_months):
                e = min(s + block_months, n_months)
                blk = np.zeros((e - s, NLAT, NLON), np.float32)
                b_rng = np.random.default_rng([seed, s, 99, sum(map(ord, name))])
                w = b_rng.uniform(0.5, 2, (e - s, n_fill))
                w[b_rng.uniform(size=w.shape) < 0.99] = 0.0
                blk[:, filled] = w
                v[s:e] = blk
        return fill

    tdims, gdims = ("time", "lat", "lon"), ("lat", "lon")
    variables = {n: (gdims, x, {"units": "%" if n in PFT else STATIC.get(n, (0, 0, "1"))[2]})
                 for n, x in static.items()}
    variables["LAT"] = (gdims, static["LAT"], {"units": "degrees_north"})
    variables["initial_som"] = (gdims, static["initial_som"], {"units": "gC m-2"})
    variables["DAYS"] = (tdims, monthly("DAYS"), {"units": "days since 2001-01-01"})
    variables["DOY"] = (tdims, monthly("DOY"), {"units": "day"})
    for n, (_, _, units, _) in TEMPORAL.items():
        variables[n] = (tdims, monthly(n), {"units": units})
    for n in ("gpp_fluxnet", "reco_fluxnet", "et_fluxnet"):
        variables[f"{n}_weight"] = (tdims, weight(n), {"units": "1"})
    _write(out / DRIVER_FILE, variables, lat, lon, time=days, zlib=zlib)
    _write(out / RUN_INDEX_FILE, {"run_simulation_idx": (("run", "lat", "lon"), index, {})},
           lat, lon, run=N_RUNS)
    _write(out / VALID_FILE, {"era_valid": (gdims, valid, {})}, lat, lon)
    bulk = np.ones((NLAT, NLON), bool)
    bulk[(lat2d > 50) & (lat2d < 51)] = False  # a band without NBE/GRACE labels
    _write(out / BULK_FILE, {"assimilate_bulk_variable": (gdims, bulk, {})}, lat, lon)
    lines = ["# NOAA global monthly mean CO2 (generated)", "year,month,decimal,average,average_unc,trend,trend_unc"]
    for k in range(12 + n_months + 12):
        y, m = 2000 + k // 12, k % 12 + 1
        lines.append(f"{y},{m},{y + (m - 0.5) / 12:.4f},{368.0 + 0.17 * k:.2f},0.1,0,0")
    (out / CO2_FILE).write_text("\n".join(lines) + "\n")
    return {"land": land, "valid": valid, "index": index, "test_cells": int(test_cells.size),
            "golden_cells": golden_cells, "n_months": n_months,
            "files": {f: out / f for f in (DRIVER_FILE, RUN_INDEX_FILE, VALID_FILE, BULK_FILE,
                                          CO2_FILE, MEAN_CSV, STD_CSV)}}
