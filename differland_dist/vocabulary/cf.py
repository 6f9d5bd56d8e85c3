"""CF attributes of what differland writes: stored series, per-pixel parameters and their
gridded maps (units UDUNITS-2, ``long_name``, ``standard_name`` where CF has one)."""

from __future__ import annotations

from typing import Any

from differland_dist.vocabulary.parameters import Bound
from differland_dist.vocabulary.series import SeriesSpec
from differland_dist.vocabulary.units import udunits

#: The auxiliary coordinates of every per-pixel variable.
PIXEL_COORDINATES = "pixel_lat pixel_lon"


def cf_attrs(units: str, long_name: str, **extra) -> dict[str, Any]:
    """``{"units": units, "long_name": long_name, **extra}``."""
    return {"units": units, "long_name": long_name, **extra}


def series_attrs(s: SeriesSpec, gridded: bool, time_coordinate: str = "") -> dict[str, Any]:
    """CF attributes of a stored series: units, long_name, standard_name (where one exists),
    cell_methods (fluxes are step means), auxiliary coordinates (plus ``time_coordinate``, a
    site store's per-site time, when given) and the pixel's cell area."""
    a = cf_attrs(s.units, s.long_name, model_outputs=" + ".join(s.sources),
                 coordinates=PIXEL_COORDINATES + (f" {time_coordinate}" if time_coordinate else ""))
    if s.standard_name:
        a["standard_name"] = s.standard_name
    if s.flux:
        a["cell_methods"] = "time: mean"
    if gridded:
        a["cell_measures"] = "area: pixel_area"
    return a


def parameter_attrs(b: Bound) -> dict[str, Any]:
    """CF attributes of a stored per-pixel parameter (``param_<output_name>``)."""
    return cf_attrs(udunits(b.units), b.long_name, coordinates=PIXEL_COORDINATES)


def parameter_map_attrs(b: Bound) -> dict[str, Any]:
    """CF attributes of a gridded parameter map (``map_<output_name>``)."""
    return cf_attrs(udunits(b.units), f"{b.long_name} (map)", grid_mapping="crs",
                    cell_measures="area: cell_area")
