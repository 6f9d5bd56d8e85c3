"""What a worker gets for a set of patches, and the pure functions that assemble it.

A :class:`PatchBatch` holds the pixels of whole patches: the model forcing in the 17-column
layout of :data:`differland_dist.vocabulary.dalec_io.FORCING_NAMES`, the raw predictors and the
observations as :class:`~differland_dist.vocabulary.labels.Labels` (value, weight per stream by name).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np

from differland_dist.data import schema
from differland_dist.errors import ConfigError
from differland_dist.vocabulary.labels import Labels
from differland_dist.vocabulary.dalec_io import FORCING_NAMES

#: Days per year used to turn MAP (mm yr-1) into the model's map_daily (mm d-1).
DAYS_PER_YEAR = 365.22
#: Store variables that make up the forcing (besides lat, MAT, MAP).
FORCING_VARS = ("time", "t_min", "t_max", "swrad", "co2", "doy", "burned_area", "vpd",
                "precip", "delta_t")
#: Per-pixel variables the forcing needs.
FORCING_PIXEL_VARS = ("lat", "MAT", "MAP")
#: The store variable of a time split (site stores): (pixel, time) 1 at test-time steps.
TIME_TEST = "time_test"


class PatchBatch(NamedTuple):
    """The pixels of a set of whole patches (P pixels, T steps).

    pixel_index: (P,) int64 global pixel indices, in the order of the patches asked for.
    patch: (P,) int32 patch id of each pixel.
    forcing: (P, T, 17) float32, columns in FORCING_NAMES order (norm_* columns zero).
    predictors: (P, n) float32 raw (unstandardised) predictors, in the order asked for.
    labels: float32 (P, T) value and weight per stream by name; weight 0 (and value 0) where
      the stream is off, its product absent, or the value missing; ``time_test`` set when the
      store has a time split.
    """

    pixel_index: np.ndarray
    patch: np.ndarray
    forcing: np.ndarray
    predictors: np.ndarray
    labels: Labels


def predictor_names(sets: list[str] | tuple[str, ...]) -> list[str]:
    """Predictor names of a list of set names (e.g. ["PFT", "CLIM", "SOIL", "AGE"]), in
    PREDICTOR_SET_ORDER, without the hemisphere feature. LATLON gives lat, lon; CONTROL "null"."""
    unknown = [s for s in sets if s not in schema.PREDICTOR_SETS]
    if unknown:
        raise ConfigError(f"unknown predictor set(s) {unknown}; known: "
                          f"{', '.join(schema.PREDICTOR_SET_ORDER)}")
    chosen = set(sets)
    return [n for s in schema.PREDICTOR_SET_ORDER if s in chosen for n in schema.PREDICTOR_SETS[s]]


def _series(x: np.ndarray, P: int, T: int, per: str) -> np.ndarray:
    """(P, T) view of a (P, T) array, or of a 1-D one given ``per`` step ("time") or pixel."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        return x
    return np.broadcast_to(x[None, :] if per == "time" else x[:, None], (P, T))


def assemble_forcing(v: Mapping[str, np.ndarray]) -> np.ndarray:
    """(P, T, 17) float32 model forcing from store variables.

    Args:
      v: ``time``, ``doy``, ``delta_t``, ``co2`` (T,); ``t_min``, ``t_max``, ``swrad``,
        ``burned_area``, ``vpd``, ``precip`` (P, T); ``lat``, ``MAT``, ``MAP`` (P,).
    """
    P, T = np.shape(v["t_min"])
    cols = {
        "days": v["time"], "t_min": v["t_min"], "t_max": v["t_max"], "swrad": v["swrad"],
        "co2": v["co2"], "doy": v["doy"], "burned_area": v["burned_area"], "vpd": v["vpd"],
        "precip": v["precip"], "lat": v["lat"], "delta_t": v["delta_t"], "mat": v["MAT"],
        "map_daily": np.asarray(v["MAP"], np.float32) / np.float32(DAYS_PER_YEAR),
    }
    per_pixel = {"lat", "mat", "map_daily"}
    out = np.zeros((P, T, len(FORCING_NAMES)), dtype=np.float32)
    for i, name in enumerate(FORCING_NAMES):
        if name in cols:
            out[:, :, i] = _series(cols[name], P, T, "pixel" if name in per_pixel else "time")
    return out


def assemble_predictors(v: Mapping[str, np.ndarray], names: list[str], P: int) -> np.ndarray:
    """(P, n) float32 raw predictors in ``names`` order; "null" is a column of ones."""
    out = np.empty((P, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        out[:, j] = 1.0 if name == "null" else np.asarray(v[name], dtype=np.float32)
    return out


def assemble_labels(v: Mapping[str, np.ndarray], products: Mapping[str, str | None],
                    P: int, T: int) -> Labels:
    """Float32 :class:`Labels`: for each stream, value (NaN -> 0) and weight (0 at gaps).

    Args:
      v: ``obs_<product>`` and ``obs_<product>_weight`` arrays, (P, T) or static (P,), and
        ``time_test`` (P, T) if the store splits time.
      products: stream -> product; a stream mapped to None, or whose product is not in ``v``,
        gets value 0 and weight 0.
    """
    values, weights = {}, {}
    for st in schema.STREAMS:
        prod = products.get(st.name)
        vname = schema.obs_value_name(prod) if prod else None
        if vname is None or vname not in v:
            continue
        values[st.name], weights[st.name] = v[vname], v[schema.obs_weight_name(prod)]
    return Labels.from_observations(values, weights, P, T, time_test=v.get(TIME_TEST))
