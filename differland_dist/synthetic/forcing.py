"""The monthly forcing of the synthetic Earth: temperature, radiation, humidity, rainfall and
fire from each pixel's climate normals, seasonal cycles by hemisphere, insolation from orbital
geometry, spatially coherent monthly anomalies and lognormal weather; a global co2 series.
"""

from __future__ import annotations

import math

import numpy as np

from differland_dist.synthetic.fields import (
    RNG_ANOMALY, RNG_FIRE, RNG_WEATHER, sigmoid, smooth_fields, sphere_xyz, stream)


def toa_radiation(lat: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """(P, T) daily mean top-of-atmosphere shortwave, MJ m-2 d-1 (orbital geometry)."""
    phi = np.deg2rad(lat.astype(np.float64))[:, None]
    d = doy.astype(np.float64)[None, :]
    dec = np.deg2rad(23.44) * np.sin(2 * np.pi * (284.0 + d) / 365.0)
    ecc = 1.0 + 0.033 * np.cos(2 * np.pi * d / 365.0)
    h0 = np.arccos(np.clip(-np.tan(phi) * np.tan(dec), -1.0, 1.0))
    q = (86400.0 / np.pi) * 1361.0 * ecc * (h0 * np.sin(phi) * np.sin(dec)
                                            + np.cos(phi) * np.cos(dec) * np.sin(h0))
    return np.maximum(q, 0.0) / 1e6


def _ar1(rng: np.random.Generator, n: int, T: int, rho: float) -> np.ndarray:
    e = rng.normal(size=(n, T))
    out = np.empty_like(e)
    out[:, 0] = e[:, 0]
    s = math.sqrt(1 - rho * rho)
    for t in range(1, T):
        out[:, t] = rho * out[:, t - 1] + s * e[:, t]
    return out


def make_forcing(lat, lon, pred: dict[str, np.ndarray], axis: dict[str, np.ndarray],
                 seed: int) -> dict[str, np.ndarray]:
    """Monthly forcing (float32): per-pixel series (P, T) and per-step co2 (T,)."""
    P, T = lat.shape[0], axis["time"].shape[0]
    xyz = sphere_xyz(lat, lon)
    rng = stream(seed, RNG_ANOMALY)
    modes = smooth_fields(rng, xyz, 6, 0.3)                        # (P, 6)
    t_anom = modes @ _ar1(rng, 6, T, 0.6) / math.sqrt(6)            # ~1 K, spatially coherent
    p_anom = modes @ _ar1(rng, 6, T, 0.3) / math.sqrt(6)
    wx = stream(seed, RNG_WEATHER)
    lat64 = lat.astype(np.float64)[:, None]
    alat = np.abs(lat64)
    north = lat64 >= 0
    doy = axis["doy"].astype(np.float64)[None, :]
    mat = pred["MAT"].astype(np.float64)[:, None]
    map_d = pred["MAP"].astype(np.float64)[:, None] / 365.22
    cont = pred["_continentality"].astype(np.float64)[:, None]
    # temperature: coldest month ~ 20 Jan (north) / 20 Jul (south)
    amp = np.clip((1.0 + 0.25 * alat) * (1.0 + 0.2 * np.tanh(cont)), 0.5, 22.0)
    season = np.where(north, 1.0, -1.0) * np.cos(2 * np.pi * (doy - 20.0) / 365.25)
    t_mean = mat - amp * season + 1.2 * t_anom
    # precipitation: a summer rainy season strongest near 15 degrees, lognormal weather
    s = np.clip(0.9 * np.exp(-((alat - 15.0) / 12.0) ** 2) + 0.15 * np.tanh(cont), 0.0, 0.95)
    peak = np.where(north, 200.0, 20.0)
    shape = 1.0 + s * np.cos(2 * np.pi * (doy - peak) / 365.25)
    weather = np.exp(0.45 * p_anom + 0.35 * wx.normal(size=(P, T)) - 0.5 * (0.45**2 + 0.35**2))
    precip = np.clip(map_d * shape * weather, 0.0, 400.0)
    wet = precip / (precip + 2.0)
    dry = np.clip(1.0 - map_d * 365.22 / 1500.0, 0.0, 1.0)
    dtr = 6.0 + 9.0 * dry - 3.0 * wet
    t_min = t_mean - dtr / 2
    t_max = t_mean + dtr / 2
    swrad = np.maximum(toa_radiation(lat, axis["doy"]) * (0.76 - 0.36 * wet), 0.1)
    rh = np.clip(0.3 + 0.6 * wet, 0.15, 0.95)
    t_day = t_mean + dtr / 4
    vpd = 6.112 * np.exp(17.67 * t_day / (t_day + 243.5)) * (1.0 - rh)
    # fire: fire-prone warm, seasonally dry, grassy pixels burn now and then
    fr = stream(seed, RNG_FIRE)
    grassy = (pred["SAV"] + pred["GRA"] + pred["SH"]).astype(np.float64)[:, None]
    prone = sigmoid(4.0 * grassy - 1.5 + 0.8 * cont) * (mat > 2.0)
    month_dry = np.clip(1.0 - precip / (map_d + 1e-6), 0.0, 1.0)
    burn = fr.uniform(size=(P, T)) < 0.25 * prone * month_dry
    burned = np.where(burn, np.minimum(fr.exponential(0.04, size=(P, T)), 0.8), 0.0)
    years = (axis["time"] - 15.5) / 365.25
    co2 = 370.5 + 1.9 * years + 0.012 * years**2 + 2.5 * np.sin(2 * np.pi * (axis["doy"] - 100) / 365.25)
    out = dict(t_min=t_min, t_max=t_max, swrad=swrad, vpd=vpd, precip=precip, burned_area=burned)
    out = {k: v.astype(np.float32) for k, v in out.items()}
    out["co2"] = co2.astype(np.float32)
    return out
