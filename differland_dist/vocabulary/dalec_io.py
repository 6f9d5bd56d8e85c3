"""DALEC 993's inputs and outputs by name: the forcing columns of a step, the diagnostic
outputs and their units (numpy-free, JAX-free: the store layer and the series catalogue read
them without importing the model)."""

from __future__ import annotations

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

FORCING_NAMES = tuple(n for n, _ in FORCING)
N_FORCING, N_OUTPUTS = len(FORCING_NAMES), len(OUTPUTS)
OUTPUT_INDEX = {n: i for i, n in enumerate(OUTPUTS)}
FORCING_INDEX = {n: i for i, n in enumerate(FORCING_NAMES)}
