"""The pixel store's schema: every variable's name, dims, dtype, units and valid range.

A store is one zarr v3 group readable by ``xarray.open_zarr``. Dimensions:

* ``pixel``: the land pixels, ordered by patch (the pixels of patch p are a contiguous run);
* ``time``: the model steps (monthly or daily; ``delta_t`` gives each step's length);
* ``param`` (synthetic stores only): the 31 + 2 + 7 true parameters.

Variables carry ``units`` and ``long_name`` attributes; the group carries ``attrs`` listed in
:data:`GLOBAL_ATTRS`. Observation gaps are NaN in the value and 0 in the weight.
This module is the single source of these facts (the observation streams' come from
``differland_dist.streams``); docs/data.md explains them for people.
"""

from __future__ import annotations

from typing import NamedTuple

from differland_dist import streams as _streams


class Var(NamedTuple):
    name: str
    dims: tuple[str, ...]
    dtype: str
    units: str
    long_name: str
    lo: float
    hi: float
    required: bool = True
    gaps_allowed: bool = False


P, T = ("pixel",), ("time",)
PT = ("pixel", "time")

#: Coordinates and per-pixel metadata.
COORDS: tuple[Var, ...] = (
    Var("lat", P, "float32", "degrees_north", "pixel centre latitude", -90, 90),
    Var("lon", P, "float32", "degrees_east", "pixel centre longitude", -180, 360),
    Var("row", P, "int32", "1", "grid row of the pixel (0 = northernmost)", 0, 1e7),
    Var("col", P, "int32", "1", "grid column of the pixel (0 = westernmost)", 0, 1e7),
    Var("patch", P, "int32", "1", "patch the pixel belongs to (contiguous, sorted)", 0, 1e9),
    Var("split", P, "int8", "1", "0 = train, 1 = dev, 2 = test (by patch)", 0, 2),
    Var("time", T, "float64", "days since 2001-01-01", "mid-step time", -1e6, 1e6),
)

#: Forcing: gap-free. Per-step globals have dims (time,), per-pixel series (pixel, time).
FORCING: tuple[Var, ...] = (
    Var("doy", T, "float32", "day", "day of year at mid-step", 0, 367),
    Var("delta_t", T, "float32", "d", "length of the step", 0.01, 31),
    Var("co2", T, "float32", "ppm", "atmospheric CO2 mole fraction", 200, 1000),
    Var("t_min", PT, "float32", "degC", "minimum air temperature", -90, 60),
    Var("t_max", PT, "float32", "degC", "maximum air temperature", -90, 70),
    Var("swrad", PT, "float32", "MJ m-2 d-1", "incoming shortwave radiation", 0, 50),
    Var("vpd", PT, "float32", "hPa", "vapour pressure deficit", 0, 150),
    Var("precip", PT, "float32", "mm d-1", "precipitation", 0, 500),
    Var("burned_area", PT, "float32", "1", "fraction of the pixel burnt in the step", 0, 1),
)

#: Static predictors (pixel,), raw (unstandardised). MAT and MAP also feed the forcing.
PREDICTORS: tuple[Var, ...] = (
    *(Var(n, P, "float32", "1", f"fraction of {n} vegetation type", 0, 1, required=False)
      for n in ("NF", "DBF", "EBF", "MF", "SH", "SAV", "GRA", "WET", "CRO", "NVG")),
    Var("MAT", P, "float32", "degC", "long-term mean air temperature", -60, 40),
    Var("MAP", P, "float32", "mm yr-1", "long-term mean annual precipitation", 0, 15000),
    Var("elevation", P, "float32", "m", "surface elevation", -500, 9000, required=False),
    Var("canopy_height", P, "float32", "m", "canopy height", 0, 100, required=False),
    Var("forest_age", P, "float32", "yr", "forest age", 0, 1000, required=False),
    Var("BULK_DEN", P, "float32", "kg dm-3", "soil bulk density", 0, 3, required=False),
    Var("SAND", P, "float32", "%", "soil sand content", 0, 100, required=False),
    Var("SILT", P, "float32", "%", "soil silt content", 0, 100, required=False),
    Var("CLAY", P, "float32", "%", "soil clay content", 0, 100, required=False),
    Var("GRAVEL", P, "float32", "%", "soil gravel content", 0, 100, required=False),
)

#: Predictor sets of the paper; the hemisphere feature sigmoid(lat) is always first.
PREDICTOR_SETS: dict[str, tuple[str, ...]] = {
    "PFT": ("NF", "DBF", "EBF", "MF", "SH", "SAV", "GRA", "WET", "CRO", "NVG"),
    "CLIM": ("MAT", "MAP", "elevation"),
    "AGE": ("canopy_height", "forest_age"),
    "SOIL": ("BULK_DEN", "SAND", "SILT", "CLAY", "GRAVEL"),
    "LATLON": ("lat", "lon"),
    "CONTROL": ("null",),  # a constant input: the network learns one parameter set
}
#: The order in which sets are concatenated (the paper's order: PFT, CLIM, AGE, SOIL).
PREDICTOR_SET_ORDER = ("PFT", "CLIM", "AGE", "SOIL", "LATLON", "CONTROL")

class Stream(NamedTuple):
    """A stream's store facts (derived from :data:`differland_dist.streams.STREAMS`, the one
    stream table). ``level``: "pixel" terms compare pixel values; "patch" terms compare patch
    means."""

    name: str
    default_product: str
    units: str
    level: str
    lo: float
    hi: float


#: The 12 observation streams, in the label order of the published loss, with their units.
STREAMS: tuple[Stream, ...] = tuple(
    Stream(s.name, s.default_product, s.units, s.level, s.lo, s.hi) for s in _streams.label_order())
STREAM_NAMES = tuple(s.name for s in STREAMS)
STREAM_INDEX = {s.name: i for i, s in enumerate(STREAMS)}


def obs_value_name(product: str) -> str:
    """Store variable holding an observation product's values, e.g. ``obs_lai``."""
    return f"obs_{product}"


def obs_weight_name(product: str) -> str:
    """Store variable holding a product's weights/mask (0 = missing), e.g. ``obs_lai_weight``."""
    return f"obs_{product}_weight"


#: Observation variables: ``obs_<product>`` (pixel, time) float32 (NaN = gap; static products
#: such as ``som`` may have dims (pixel,)), ``obs_<product>_weight`` same dims, >= 0.
#: Each value variable's attrs include ``stream`` (one of STREAM_NAMES). Alternative products
#: of a stream (e.g. ``obs_lai_copernicus``) are further variables with the same ``stream``.

#: Group attributes every store has.
GLOBAL_ATTRS = (
    "differland_store_version",  # int, 1
    "title",
    "source",                    # "synthetic", "fluxnet_sites", "netcdf"
    "steps_per_year",            # int: 12 for monthly, 365 for daily
    "max_patch_size",            # int
    "grid_resolution_deg",       # float, or 0 for point (site) stores
    "complete",                  # bool: set last, only when every variable is written
)
STORE_VERSION = 1
