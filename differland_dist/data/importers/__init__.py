"""Importers: turn external data layouts into pixel stores (:mod:`differland_dist.data.schema`).

* :mod:`.sites`: single-site driver files (the FLUXNET layout of DifferLand v1.0), each site a
  pixel and a patch of its own (``differland import-sites``);
* :mod:`.netcdf`: the gridded global driver of the paper (DifferLand_Global layout: one netCDF
  with ``time``/``lat``/``lon`` variables, the CO2 CSV, the valid-pixel mask, the split-index
  file and the bulk-assimilation mask; ``differland import-netcdf``).

Both check their inputs before the long work starts (errors name the file, the variable, the
site or pixel range, and what was expected), build an in-memory (or disk-staged) Dataset and
hand it to :func:`differland_dist.data.store.write_store`, which validates it and sets the
store's ``complete`` flag last: an interrupted import never leaves a store that validates.

This module holds the helpers both share. It imports only the schema; the schema facts
:data:`PER_PIXEL_FORCING`, :func:`by_pixel_name` and :data:`SCHEMA_VARS` (``schema.VARS``) are
re-exported from :mod:`differland_dist.data.schema`, where they live.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import xarray as xr

from differland_dist.data import schema
from differland_dist.data.schema import PER_PIXEL_FORCING, by_pixel_name

#: Schema variables by name (:data:`differland_dist.data.schema.VARS`).
SCHEMA_VARS: dict[str, schema.Var] = schema.VARS
#: Items listed in an error message before summarising.
MAX_LISTED = 8


def schema_var(name: str, data: Any, dims: tuple[str, ...] | str | None = None,
               **attrs: Any) -> xr.Variable:
    """A schema variable with the schema's dtype, units and long_name (``attrs`` added).

    ``dims`` defaults to the schema's; give ``("pixel", "time")`` for a per-pixel override
    series of a per-step variable.
    """
    spec = SCHEMA_VARS[name]
    dims = spec.dims if dims is None else dims
    return xr.Variable(dims, np.asarray(data, dtype=spec.dtype),
                       {"units": spec.units, "long_name": spec.long_name, **attrs})


def obs_variables(product: str, stream: str, value: np.ndarray, weight: np.ndarray,
                  long_name: str, **attrs: Any) -> dict[str, xr.Variable]:
    """``obs_<product>`` and ``obs_<product>_weight`` as store variables.

    Args:
      product, stream: product name and its stream (one of ``schema.STREAM_NAMES``).
      value: (pixel, time) or static (pixel,) values in the stream's units; NaN = gap.
      weight: same shape, >= 0; set to 0 wherever ``value`` is NaN here.
      long_name: what the values are; ``attrs``: extra attributes of the value variable.
    """
    st = schema.STREAMS[schema.STREAM_INDEX[stream]]
    value = np.asarray(value, dtype=np.float32)
    weight = np.where(np.isfinite(value), np.asarray(weight, dtype=np.float32), np.float32(0))
    dims = ("pixel", "time") if value.ndim == 2 else ("pixel",)
    return {
        schema.obs_value_name(product): xr.Variable(dims, value, {
            "units": st.units, "long_name": long_name, "stream": stream,
            "level": st.level, **attrs}),
        schema.obs_weight_name(product): xr.Variable(dims, weight.astype(np.float32), {
            "units": "1", "long_name": f"weight of obs_{product} (0 = missing)"}),
    }


def spans(indices: Iterable[int], limit: int = MAX_LISTED) -> str:
    """Compact text of sorted integer indices: ``"3..7, 12, 20..21"`` (at most ``limit`` runs)."""
    idx = np.unique(np.asarray(list(indices), dtype=np.int64))
    if idx.size == 0:
        return "none"
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = np.r_[idx[0], idx[breaks + 1]]
    stops = np.r_[idx[breaks], idx[-1]]
    runs = [f"{a}" if a == b else f"{a}..{b}" for a, b in zip(starts, stops)]
    more = f" and {len(runs) - limit} more run(s)" if len(runs) > limit else ""
    return ", ".join(runs[:limit]) + more


def base_attrs(title: str, source: str, steps_per_year: int, max_patch_size: int,
               grid_resolution_deg: float, **extra: Any) -> dict[str, Any]:
    """The group attributes every store carries (``schema.GLOBAL_ATTRS`` but ``complete``)."""
    return {
        "differland_store_version": schema.STORE_VERSION,
        "title": title,
        "source": source,
        "steps_per_year": int(steps_per_year),
        "max_patch_size": int(max_patch_size),
        "grid_resolution_deg": float(grid_resolution_deg),
        **extra,
    }


__all__ = ["PER_PIXEL_FORCING", "SCHEMA_VARS", "base_attrs", "by_pixel_name", "obs_variables",
           "schema_var", "spans"]
