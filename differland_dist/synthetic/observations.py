"""The observations of the synthetic Earth: DALEC's outputs under the true parameters, with
noise and realistic coverage, as the store's observation products.

Each product is ``name -> (value, weight, level, description)``: value NaN and weight 0 at gaps,
level "pixel" or "patch" (one value per patch, broadcast to its pixels). The draws come from
two streams, ``noise`` and ``cover``, in a fixed order (the steps below run in sequence; never
reorder them: that changes every store).
"""

from __future__ import annotations

import logging

import numpy as np

from differland_dist.data import schema
from differland_dist.synthetic.fields import RNG_COVER, RNG_NOISE, stream
from differland_dist.synthetic.geography import LandPixels

log = logging.getLogger(__name__)

#: One observation product: (value, weight, level, description).
Product = tuple[np.ndarray, np.ndarray, str, str]


def _patch_mean(x: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Mean over the pixels of each patch, broadcast back to the pixels (axis 0)."""
    n = np.bincount(patch).astype(np.float64)
    s = np.zeros((n.size,) + x.shape[1:], np.float64)
    np.add.at(s, patch, x.astype(np.float64))
    return (s / n.reshape((-1,) + (1,) * (x.ndim - 1)))[patch]


def _annual_mean(x: np.ndarray, year_index: np.ndarray) -> np.ndarray:
    """(P, T) -> (P, T): each month replaced by its calendar year's mean."""
    out = np.empty_like(x)
    for y in np.unique(year_index):
        m = year_index == y
        out[:, m] = x[:, m].mean(axis=1, keepdims=True)
    return out


def _masked(v: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value with NaN where unobserved, float32 weight 1/0)."""
    return np.where(observed, v, np.nan).astype(np.float32), observed.astype(np.float32)


def _gaps(cover: np.random.Generator, p: float, shape: tuple[int, int]) -> np.ndarray:
    """Observed where a uniform draw is >= ``p``: a fraction ``p`` of random gaps."""
    return cover.uniform(size=shape) >= p


def _satellite_products(sim, dark, noise, cover) -> dict[str, Product]:
    """SIF, LAI (optical: none in the polar night) and ET, per pixel and month."""
    P, T = sim["lai"].shape
    sif = sim["SIF"] + noise.normal(0.0, 0.05, (P, T)) + 0.08 * sim["SIF"] * noise.normal(size=(P, T))
    obs = {"sif": (*_masked(sif, _gaps(cover, 0.05, (P, T)) & ~dark), "pixel",
                   "model SIF + noise (0.05 + 8 %); 5 % random gaps, none in the polar night")}
    lai = np.maximum(sim["lai"] * (1 + 0.1 * noise.normal(size=(P, T)))
                     + noise.normal(0.0, 0.05, (P, T)), 0.0)
    obs["lai"] = (*_masked(lai, _gaps(cover, 0.05, (P, T)) & ~dark), "pixel",
                  "model LAI + noise (0.05 + 10 %); 5 % random gaps, none in the polar night")
    et = sim["ET"] * (1 + 0.1 * noise.normal(size=(P, T))) + noise.normal(0.0, 0.1, (P, T))
    obs["et_gleam"] = (*_masked(et, np.ones((P, T), bool)), "pixel",
                       "model ET + noise (0.1 mm/d + 10 %), every month")
    return obs


def _patch_products(sim, patch: np.ndarray, noise, cover) -> dict[str, Product]:
    """NBE, fire and the GRACE-like water anomaly: one value per patch and month."""
    P, T = sim["lai"].shape
    n_patch = int(patch.max()) + 1
    nbe = _patch_mean(sim["nbe"], patch) + noise.normal(0.0, 0.2, (n_patch, T))[patch]
    obs = {"nbe": (*_masked(nbe, np.ones((P, T), bool)), "patch",
                   "patch-mean model NBE + patch noise (0.2 gC m-2 d-1), every month")}
    fire_mean = _patch_mean(sim["total_fire_combust"], patch)
    fire = np.maximum(fire_mean * np.exp(0.2 * noise.normal(size=(n_patch, T)))[patch], 0.0)
    obs["fire"] = (*_masked(fire, np.ones((P, T), bool)), "patch",
                   "patch-mean model fire emissions x lognormal noise (20 %), every month")
    water = _patch_mean(sim["next_water_pool"], patch)
    month_seen = cover.uniform(size=T) >= 0.1  # GRACE-like: whole months missing
    anomaly = water - water[:, month_seen].mean(axis=1, keepdims=True) if month_seen.any() else water
    ewt = anomaly + noise.normal(0.0, 8.0, (n_patch, T))[patch]
    obs["ewt"] = (*_masked(ewt, np.broadcast_to(month_seen, (P, T))), "patch",
                  "patch-mean water pool minus its mean over observed months + noise (8 mm); "
                  "10 % of months missing")
    return obs


def _stock_products(sim, year: np.ndarray, noise, cover) -> dict[str, Product]:
    """Annual live biomass (60 % of pixel-years) and static soil organic carbon."""
    P = sim["lai"].shape[0]
    biomass = (sim["next_labile_pool"] + sim["next_foliar_pool"] + sim["next_wood_pool"]
               + sim["next_root_pool"])
    year_index = year - year[0]
    n_years = int(year_index.max()) + 1
    bio_ann = _annual_mean(biomass, year_index)
    bio_noise = np.exp(0.1 * noise.normal(size=(P, n_years)))[:, year_index]
    year_seen = (cover.uniform(size=(P, n_years)) < 0.6)[:, year_index]
    obs = {"biomass": (*_masked(bio_ann * bio_noise, year_seen), "pixel",
                       "annual mean of live biomass (labile+foliar+wood+root) x lognormal noise "
                       "(10 %), all 12 months of a year; 60 % of pixel-years observed")}
    som = sim["next_som_pool"].mean(axis=1) * np.exp(0.15 * noise.normal(size=P))
    obs["som"] = (*_masked(som, np.ones(P, bool)), "pixel",
                  "time-mean soil organic carbon x lognormal noise (15 %), static")
    return obs


def _tower_products(sim, noise, cover) -> dict[str, Product]:
    """Flux towers: a few percent of pixels, each running for a few consecutive years."""
    P, T = sim["lai"].shape
    n_tower = max(1, int(round(0.03 * P)))
    towers = np.sort(cover.choice(P, size=n_tower, replace=False))
    running = np.zeros((P, T), bool)
    for p in towers:
        length = int(cover.integers(min(24, T), T + 1))
        start = int(cover.integers(0, T - length + 1))
        running[p, start:start + length] = True
    running &= _gaps(cover, 0.05, (P, T))
    reco = sim["respiration_auto"] + sim["respiration_hetero_litter"] + sim["respiration_hetero_som"]
    return {name: (*_masked(v + noise.normal(0.0, sd, (P, T)), running), "pixel",
                   f"model flux + noise ({sd}) at {n_tower} tower pixel(s) "
                   f"({100 * n_tower / P:.1f} %), a few years each")
            for name, v, sd in (("gpp_flux", sim["gpp"], 0.3), ("reco_flux", reco, 0.3),
                                ("et_flux", sim["ET"], 0.2))}


def _drop_out_of_range(obs: dict[str, Product]) -> None:
    """The truth can stray outside a product's plausible range at a few pixel-steps (a rare
    parameter combination): those become gaps (in place), so every store passes validation."""
    for product, (value, weight, _, _) in obs.items():
        st = schema.STREAMS[schema.STREAM_INDEX[product]]
        bad = np.isfinite(value) & ((value < st.lo) | (value > st.hi))
        if bad.any():
            log.warning("obs_%s: %d value(s) outside [%g, %g] %s made gaps", product,
                        int(bad.sum()), st.lo, st.hi, st.units)
            value[bad], weight[bad] = np.nan, 0.0


def make_observations(sim: dict[str, np.ndarray], forcing: dict[str, np.ndarray],
                      grid: LandPixels, axis: dict[str, np.ndarray], seed: int) -> dict[str, Product]:
    """Observation products: name -> (value, weight, level, description); gaps NaN / 0.

    Args:
      sim: DALEC outputs (:data:`~differland_dist.synthetic.truth.KEPT_OUTPUTS`), (P, T) each.
      forcing: the monthly forcing (its ``swrad`` marks the polar night).
      grid: the land pixels (their patches).
      axis: the monthly time axis (its ``year``).
    """
    noise, cover = stream(seed, RNG_NOISE), stream(seed, RNG_COVER)
    dark = forcing["swrad"] < 3.0  # optical sensors see nothing in the polar night
    obs = _satellite_products(sim, dark, noise, cover)
    obs.update(_patch_products(sim, grid.patch, noise, cover))
    obs.update(_stock_products(sim, axis["year"], noise, cover))
    obs.update(_tower_products(sim, noise, cover))
    _drop_out_of_range(obs)
    return obs
