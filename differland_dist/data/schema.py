"""The pixel store's schema: every variable's name, dims, dtype, units and valid range.

A store is one zarr v3 group readable by ``xarray.open_zarr``. Dimensions:

* ``pixel``: the land pixels, ordered by patch (the pixels of patch p are a contiguous run);
* ``time``: the model steps (monthly or daily; ``delta_t`` gives each step's length);
* ``param`` (synthetic stores only): the 31 + 2 + 7 true parameters.

Variables carry ``units`` and ``long_name`` attributes; the group carries ``attrs`` listed in
:data:`GLOBAL_ATTRS`. Observation gaps are NaN in the value and 0 in the weight.
This module is the single source of these facts (the observation streams' come from
``differland_dist.vocabulary.streams``); docs/data.md explains them for people.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from differland_dist.vocabulary import streams as _streams


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

#: Most sites a store can give the SITE predictor set (one-hot site index) for.
MAX_SITES = 64
#: The SITE predictors: ``site_00`` is 1 at the store's first site, ... (site stores write all
#: MAX_SITES columns, 0 beyond their sites). Each site gets an input of its own, so the network
#: can give every site free parameters: the per-site calibration baseline.
SITE_PREDICTORS: tuple[Var, ...] = tuple(
    Var(f"site_{k:02d}", P, "float32", "1", f"1 at site {k} of the store (one-hot site index)",
        0, 1, required=False) for k in range(MAX_SITES))

#: Schema variables by name (coordinates, forcing, predictors).
VARS: dict[str, Var] = {v.name: v for v in COORDS + FORCING + PREDICTORS + SITE_PREDICTORS}

#: Per-step forcing that a store may also give per pixel, as ``<name>_by_pixel`` (pixel, time),
#: when pixels do not share one calendar or one CO2 series (sites of different years).
PER_PIXEL_FORCING = ("time", "doy", "delta_t", "co2")


def by_pixel_name(name: str) -> str:
    """Store variable holding the per-pixel series of a per-step forcing, e.g. ``co2_by_pixel``."""
    return f"{name}_by_pixel"


#: Predictor sets of the paper; the hemisphere feature sigmoid(lat) is always first.
PREDICTOR_SETS: dict[str, tuple[str, ...]] = {
    "PFT": ("NF", "DBF", "EBF", "MF", "SH", "SAV", "GRA", "WET", "CRO", "NVG"),
    "CLIM": ("MAT", "MAP", "elevation"),
    "AGE": ("canopy_height", "forest_age"),
    "SOIL": ("BULK_DEN", "SAND", "SILT", "CLAY", "GRAVEL"),
    "LATLON": ("lat", "lon"),
    "CONTROL": ("null",),  # a constant input: the network learns one parameter set
    "SITE": tuple(v.name for v in SITE_PREDICTORS),  # site stores only: a parameter set per site
}
#: The order in which sets are concatenated (the paper's order: PFT, CLIM, AGE, SOIL).
PREDICTOR_SET_ORDER = ("PFT", "CLIM", "AGE", "SOIL", "LATLON", "CONTROL", "SITE")

class Stream(NamedTuple):
    """A stream's store facts (derived from :data:`differland_dist.vocabulary.streams.STREAMS`, the one
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


# -- valid ranges: the one check and the one message ----------------------------------------------
def outside(values, lo: float, hi: float, missing: bool = False) -> np.ndarray:
    """Bool mask (``values``' shape): finite values below ``lo`` or above ``hi``, and with
    ``missing`` also the non-finite ones (NaN, inf)."""
    v = np.asarray(values)
    if v.dtype.kind not in "fc":
        return (v < lo) | (v > hi)
    finite = np.isfinite(v)
    bad = finite & ((v < lo) | (v > hi))
    return bad | ~finite if missing else bad


def range_problem(name: str, count: int, lo: float, hi: float, units: str, where: str | None = None,
                  vmin: float | None = None, vmax: float | None = None, *, what: str = "value(s)",
                  of: str = "", stream: str | None = None) -> str:
    """The message for ``count`` values of ``name`` outside ``[lo, hi]``:
    ``"{name}: {count} {what} outside {of}[lo, hi] {units} (stream s) at {where} (actual min,
    max)"``; the stream, place and extremes only when given. For callers that tally offending
    values themselves (block by block); others use :func:`out_of_range`."""
    text = f"{name}: {count} {what} outside {of}[{lo:g}, {hi:g}] {units}"
    if stream is not None:
        text += f" (stream {stream})"
    if where is not None:
        text += f" at {where}"
    if vmin is not None and vmax is not None:
        text += f" (actual min {vmin:g}, max {vmax:g})"
    return text


def out_of_range(name: str, values, lo: float, hi: float, units: str,
                 where: Callable[[np.ndarray], str] | None = None, *, what: str = "value(s)",
                 of: str = "", stream: str | None = None, missing: bool = False) -> str | None:
    """None if every value of ``name`` lies in ``[lo, hi]`` (NaN passes unless ``missing``),
    else the one-line problem (see :func:`range_problem`).

    Args:
      values: an array, or a scalar (then the message is ``"{name} = {value} outside [lo, hi]
        units"``).
      where: names the offending elements for people, given their (n, values.ndim) indices
        (``np.argwhere`` of the mask), e.g. pixel and time-step ranges or dates.
      missing: count non-finite values as outside too (coordinates, CO2).
    """
    v = np.asarray(values)
    mask = outside(v, lo, hi, missing)
    if not mask.any():
        return None
    if v.ndim == 0:
        return f"{name} = {float(v):g} outside {of}[{lo:g}, {hi:g}] {units}"
    bad = v[mask]
    bad = bad[np.isfinite(bad)] if bad.dtype.kind in "fc" else bad
    return range_problem(name, int(mask.sum()), lo, hi, units,
                         None if where is None else where(np.argwhere(mask)),
                         float(bad.min()) if bad.size else None,
                         float(bad.max()) if bad.size else None, what=what, of=of, stream=stream)
