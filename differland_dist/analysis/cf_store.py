"""The analysis zarrs (gradients, shap, uncertainty) as CF datasets: every numeric variable has
``units`` (the analyses work on standardised or unbounded network outputs: dimensionless),
pixel coordinates are latitude/longitude, the group has ``Conventions`` and provenance."""

from __future__ import annotations

import time

import numpy as np
import xarray as xr

from differland_dist.common import provenance

#: Coordinates with units of their own.
_KNOWN = {"pixel_lat": {"units": "degrees_north", "standard_name": "latitude"},
          "pixel_lon": {"units": "degrees_east", "standard_name": "longitude"},
          "row": {"units": "1", "long_name": "grid row of the pixel"},
          "col": {"units": "1", "long_name": "grid column of the pixel"}}
#: Long names of the analysis variables (others: their name in words).
LONG_NAMES = {
    "explained": "fraction of the variance explained by the component",
    "loadings": "principal component loadings of the standardised parameter maps",
    "scores": "principal component scores of the pixel",
    "component": "principal component number",
    "shap": "SHAP value of the feature for the parameter (unbounded network output)",
    "shap_truth": "SHAP value of the feature for the true parameter (unbounded)",
    "sample_pixel": "store pixel index of the explained sample",
    "features": "standardised network input of the sample",
    "spread_ratio": "member sd / spatial sd of the ensemble mean (unbounded)",
    "ensemble_sd": "ensemble standard deviation of the unbounded parameter",
    "ensemble_mean": "ensemble mean of the unbounded parameter",
}


def cf_dataset(data_vars: dict, coords: dict, attrs: dict | None = None) -> xr.Dataset:
    """An xarray Dataset of the variables with CF attributes filled in: known coordinates'
    units and standard names, ``units = "1"`` on every other numeric variable without units,
    ``coordinates`` naming the pixel coordinates on per-pixel variables."""
    ds = xr.Dataset(data_vars, coords=coords, attrs={
        "title": "DifferLand experiment analysis", "Conventions": "CF-1.8",
        "history": f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} created by differland analyze",
        **provenance.record(), **(attrs or {})})
    pix = " ".join(c for c in ("pixel_lat", "pixel_lon") if c in ds.variables)
    for name, v in ds.variables.items():
        if name in _KNOWN:
            v.attrs = {**_KNOWN[name], **v.attrs}
        elif np.issubdtype(v.dtype, np.number) and "units" not in v.attrs:
            v.attrs["units"] = "1"
        if "long_name" not in v.attrs and "standard_name" not in v.attrs:
            v.attrs["long_name"] = LONG_NAMES.get(str(name), str(name).replace("_", " "))
        if pix and name in ds.data_vars and "pixel" in v.dims:
            v.attrs.setdefault("coordinates", pix)
    return ds
