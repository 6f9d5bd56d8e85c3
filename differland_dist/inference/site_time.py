"""Each site's own dates in an inference output of a site store.

A site store's ``time`` dimension is the step index of each site's own record (sites of
different years); its (time,) ``time`` holds pixel 0's dates and ``time_by_pixel`` (pixel,
time) every site's. The output copies ``time_by_pixel`` as an auxiliary time coordinate of
every series, so site k's step t is dated ``time_by_pixel[k, t]``, not pixel 0's date."""

from __future__ import annotations

import numpy as np
import xarray as xr

from differland_dist.data.schema import by_pixel_name

SITE_TIME = by_pixel_name("time")


def site_times(store, time_attrs: dict) -> dict[str, xr.Variable]:
    """``{"time_by_pixel": (pixel, time) float64}`` with the store's time units when the store
    gives per-site times, else empty. ``store``: an opened PixelStore."""
    if SITE_TIME not in store.array_names:
        return {}
    units = dict(store.array(SITE_TIME).attrs).get("units", time_attrs.get("units"))
    values = np.asarray(store.array(SITE_TIME)[:], np.float64)
    return {SITE_TIME: xr.Variable(("pixel", "time"), values, {
        "units": units, "calendar": time_attrs.get("calendar", "standard"), "standard_name": "time",
        "long_name": "time of each site's own step (sites of different years; time holds "
                     "pixel 0's)"})}
