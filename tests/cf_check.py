"""The CF checker (IOOS compliance-checker, CF 1.8) run on any xarray dataset we write.

A zarr store is checked through a netCDF copy: the checker reads netCDF only. The copy is written
with no fill value on coordinates and bounds and with a float time, so the checker sees our
attributes, not xarray's netCDF encoding defaults (which it would flag and which our zarr stores
do not carry)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr


def _netcdf_safe(value):
    if isinstance(value, (dict, list, tuple, bool)) or value is None:
        return json.dumps(value)
    return value


def cf_problems(ds: xr.Dataset, workdir: str, name: str = "checked") -> list[str]:
    """The checker's high- and medium-priority messages for ``ds`` (empty when it passes)."""
    pytest.importorskip("compliance_checker", reason="compliance-checker not installed")
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    ds = ds.copy()
    for v in ds.variables.values():
        v.encoding = {}
        # zarr attributes are JSON: flags come back as a list, netCDF wants the variable's type
        v.attrs = {k: (np.asarray(a, v.dtype) if k == "flag_values" else _netcdf_safe(a))
                   for k, a in v.attrs.items()}
    ds.attrs = {k: _netcdf_safe(a) for k, a in ds.attrs.items()}
    enc = {}
    for n, v in ds.variables.items():
        if np.issubdtype(v.dtype, np.datetime64):
            enc[n] = {"dtype": "float64", "units": "days since 1970-01-01", "_FillValue": None}
        elif n in ds.coords or n.endswith("_bnds") or v.dtype.kind not in "fc":
            enc[n] = {"_FillValue": None}
    path = os.path.join(workdir, f"{name}.nc")
    ds.to_netcdf(path, encoding=enc)
    CheckSuite.load_all_available_checkers()
    report = os.path.join(workdir, f"{name}.cf.json")
    ComplianceChecker.run_checker(path, ["cf:1.8"], verbose=0, criteria="normal",
                                  output_filename=report, output_format=["json"])
    with open(report) as f:
        res = json.load(f)["cf:1.8"]
    return [m for prio in ("high_priorities", "medium_priorities")
            for item in res[prio] for m in item["msgs"]]


# Messages that a store combining both CF views cannot avoid, and the one unit UDUNITS lacks:
# inference.zarr and ensemble.zarr hold the gridded maps (lat, lon with grid_mapping) and the
# per-pixel series gathered from them (pixel_lat, pixel_lon also carry standard_name latitude /
# longitude, as CF's compression by gathering asks), so "exactly one latitude variable" cannot
# hold in one store; the netCDF export splits the two views into maps.nc and series.nc, where
# it does hold (tests/test_outputs_cf.py).
COMBINED_VIEWS = ("requires exactly one variable with standard_name latitude",
                  "requires exactly one variable with standard_name longitude")
UWUE = ("uWUE",)


def unexpected(problems: list[str], allowed: tuple[str, ...]) -> list[str]:
    """The messages that no fragment of ``allowed`` explains."""
    return [m for m in problems if not any(a in m for a in allowed)]


#: Ensemble variables of every kind (series, parameter, map; mean, sd, quantiles) that the CF
#: checker looks at: its run time grows faster than the number of variables (~450 s for the
#: 265 of a small ensemble.zarr, 6 s for these), and the other names repeat these attributes.
ENSEMBLE_SAMPLE = ("gpp", "lai", "nbe", "param_LCMA", "param_Bday", "map_LCMA", "map_uWUE")


def ensemble_sample(ds):
    """The variables of ``ds`` named by :data:`ENSEMBLE_SAMPLE` with their sd and quantiles."""
    return ds[[v for v in ds.data_vars if v in ENSEMBLE_SAMPLE or v.rsplit("_", 1)[0] in ENSEMBLE_SAMPLE]]
