"""The one table of DALEC 993 names, bounds and units, and the bounded transform.

Everything that needs a parameter, pool, forcing or output name or index reads it from here.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Bound(NamedTuple):
    name: str
    lo: float
    hi: float
    units: str
    description: str


#: The 31 process parameters, in the order the network head emits them.
PROCESS_PARAMETERS: tuple[Bound, ...] = (
    Bound("decomposition_rate", 1e-5, 0.01, "d-1", "litter to SOM decomposition rate"),
    Bound("f_gpp", 0.2, 0.8, "1", "fraction of GPP respired by plants"),
    Bound("f_fol", 0.01, 0.5, "1", "fraction of NPP allocated to foliage"),
    Bound("f_root", 0.01, 1.0, "1", "fraction of remaining NPP allocated to roots"),
    Bound("leaf_lifespan", 1.001, 8.0, "yr", "leaf lifespan"),
    Bound("tor_wood", 2.5e-5, 0.001, "d-1", "wood turnover rate"),
    Bound("tor_root", 1e-4, 0.01, "d-1", "root turnover rate"),
    Bound("tor_litter", 1e-4, 0.01, "d-1", "litter mineralisation rate"),
    Bound("tor_som", 1e-7, 0.001, "d-1", "SOM mineralisation rate"),
    Bound("Q10", 0.018, 0.08, "K-1", "exponential temperature sensitivity of respiration"),
    Bound("canopy_efficiency", 5.0, 50.0, "gC m-2 d-1", "ACM canopy efficiency"),
    Bound("flab", 0.01, 0.5, "1", "fraction of NPP allocated to labile C"),
    Bound("clab_release_period", 30.4375, 100.0, "d", "labile release period"),
    Bound("leaf_fall_period", 30.4375, 150.0, "d", "leaf fall period"),
    Bound("LCMA", 5.0, 200.0, "gC m-2", "leaf carbon mass per area"),
    Bound("IWUE", 10.0, 50.0, "gC hPa kgH2O-1", "intrinsic WUE (unused by the model)"),
    Bound("runoff_focal_point", 1.0, 100000.0, "mm", "runoff focal point"),
    Bound("field_capacity", 1.0, 10000.0, "mm", "plant-available water at field capacity"),
    Bound("foliar_cf", 0.01, 1.0, "1", "foliar combustion factor"),
    Bound("ligneous_cf", 0.01, 1.0, "1", "ligneous combustion factor"),
    Bound("dom_cf", 0.01, 1.0, "1", "dead organic matter combustion factor"),
    Bound("resilience", 0.01, 1.0, "1", "fire resilience factor"),
    Bound("lab_lifespan", 1.001, 8.0, "yr", "labile pool lifespan"),
    Bound("moisture_factor", 0.01, 1.0, "1", "precipitation sensitivity of respiration"),
    Bound("uWUE", 0.5, 30.0, "gC hPa^0.5 kgH2O-1", "underlying water-use efficiency"),
    Bound("boese_r", 0.01, 0.3, "mm MJ-1", "radiation term of ET"),
    Bound("wilting_point_frac", 0.01, 0.5, "1", "wilting point as a fraction of field capacity"),
    Bound("sif_alpha", 3.0, 35.0, "gC m-2 d-1 per SIF unit", "SIF-GPP slope"),
    Bound("sif_beta_plus_three", 1.0, 9.0, "1", "SIF-GPP intercept plus three"),
    Bound("p_fol", 1e-4, 0.01, "m2 gC-1", "foliar coefficient of the VOD proxy"),
    Bound("p_wood", 1e-6, 8e-5, "m2 gC-1", "wood coefficient of the VOD proxy"),
)

#: The two phenology dates.
PHENOLOGY_PARAMETERS: tuple[Bound, ...] = (
    Bound("Bday", 365.25, 1461.0, "d", "labile release date"),
    Bound("Fday", 365.25, 1461.0, "d", "leaf fall date"),
)

#: The seven pools, in state order; the same bounds clamp the pools during the run.
POOLS: tuple[Bound, ...] = (
    Bound("labile", 1.0, 2000.0, "gC m-2", "labile carbon"),
    Bound("foliar", 1.0, 2000.0, "gC m-2", "foliar carbon"),
    Bound("root", 1.0, 2000.0, "gC m-2", "fine root carbon"),
    Bound("wood", 1.0, 100000.0, "gC m-2", "wood carbon"),
    Bound("litter", 1.0, 2000.0, "gC m-2", "litter carbon"),
    Bound("som", 1.0, 200000.0, "gC m-2", "soil organic carbon"),
    Bound("water", 1.0, 10000.0, "mm", "plant-available water"),
)

#: Forcing columns of one step, in the order of the golden files (17).
FORCING: tuple[tuple[str, str], ...] = (
    ("days", "days since 2001-01-01 (mid-step)"),
    ("t_min", "degC"),
    ("t_max", "degC"),
    ("swrad", "MJ m-2 d-1"),
    ("co2", "ppm"),
    ("doy", "day of year"),
    ("burned_area", "fraction of the pixel burnt in the step"),
    ("vpd", "hPa"),
    ("precip", "mm d-1"),
    ("lat", "degrees_north"),
    ("delta_t", "d"),
    ("mat", "degC"),
    ("map_daily", "mm d-1"),
    ("norm_temp", "1"),
    ("norm_swrad", "1"),
    ("norm_vpd", "1"),
    ("norm_co2", "1"),
)

#: The 44 diagnostic outputs of one step, in published order.
OUTPUTS: tuple[str, ...] = (
    "lai", "gpp", "ET", "temperate", "respiration_auto", "leaf_production",
    "labile_production", "root_production", "wood_production", "lff", "lrf",
    "labile_release", "leaf_litter", "wood_litter", "root_litter",
    "respiration_hetero_litter", "respiration_hetero_som", "litter_to_som", "runoff",
    "labile_fire_combust", "foliar_fire_combust", "root_fire_combust", "wood_fire_combust",
    "litter_fire_combust", "som_fire_combust", "labile_fire_transfer",
    "foliar_fire_transfer", "root_fire_transfer", "wood_fire_transfer",
    "litter_fire_transfer", "total_fire_combust", "nee", "nbe", "next_labile_pool",
    "next_foliar_pool", "next_root_pool", "next_wood_pool", "next_litter_pool",
    "next_som_pool", "next_water_pool", "beta", "SIF", "violation", "vod",
)

OUTPUT_UNITS: dict[str, str] = {
    "lai": "m2 m-2", "gpp": "gC m-2 d-1", "ET": "mm d-1", "temperate": "1",
    "lff": "d-1", "lrf": "d-1", "runoff": "mm d-1", "beta": "1", "SIF": "SIF units",
    "violation": "mm d-1", "vod": "1",
    **{n: "gC m-2" for n in OUTPUTS if n.startswith("next_") and n != "next_water_pool"},
    "next_water_pool": "mm",
}
for _n in OUTPUTS:
    OUTPUT_UNITS.setdefault(_n, "gC m-2 d-1")

PARAM_NAMES = tuple(b.name for b in PROCESS_PARAMETERS)
PHENO_NAMES = tuple(b.name for b in PHENOLOGY_PARAMETERS)
POOL_NAMES = tuple(b.name for b in POOLS)
FORCING_NAMES = tuple(n for n, _ in FORCING)
N_PARAMS, N_PHENO, N_POOLS, N_FORCING, N_OUTPUTS = (
    len(PARAM_NAMES), len(PHENO_NAMES), len(POOL_NAMES), len(FORCING_NAMES), len(OUTPUTS))

OUTPUT_INDEX = {n: i for i, n in enumerate(OUTPUTS)}
FORCING_INDEX = {n: i for i, n in enumerate(FORCING_NAMES)}


def bounds_array(table: tuple[Bound, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) float32 arrays for a table, in table order."""
    lo = np.array([b.lo for b in table], dtype=np.float32)
    hi = np.array([b.hi for b in table], dtype=np.float32)
    return lo, hi


def all_bounds() -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) float64 (40,) of the 31 process, 2 phenology and 7 pool parameters, in
    network-head order (float32 values of the table, as the network sees them)."""
    los, his = zip(*(bounds_array(t) for t in (PROCESS_PARAMETERS, PHENOLOGY_PARAMETERS, POOLS)))
    return np.concatenate(los).astype(np.float64), np.concatenate(his).astype(np.float64)


def _xp(*arrays):
    """numpy for numpy/Python inputs (float64 stays float64: synthesis and evaluation),
    jax.numpy otherwise (the network's traced outputs)."""
    if all(isinstance(a, (np.ndarray, np.generic, float, int)) for a in arrays):
        return np
    # imported here: only for JAX arrays; this module's own code is JAX-free for its numpy callers
    import jax.numpy as jnp

    return jnp


def to_bounded(x, lo, hi):
    """Map unbounded x to [lo, hi]: ``lo * (hi/lo) ** (atan(x)/pi + 0.5)`` (log-uniform).

    The one bounded transform: JAX arrays give JAX arrays (the network head), numpy arrays
    give numpy arrays in their own precision."""
    xp = _xp(x, lo, hi)
    return lo * (hi / lo) ** (xp.arctan(x) / xp.pi + 0.5)


def to_unbounded(p, lo, hi):
    """Inverse of :func:`to_bounded`, for p strictly inside (lo, hi) (numpy or JAX, as there)."""
    xp = _xp(p, lo, hi)
    return xp.tan((xp.log(p / lo) / xp.log(hi / lo) - 0.5) * xp.pi)
