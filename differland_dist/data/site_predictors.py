"""The SITE predictor set of site stores: a one-hot site index, so that one network can give
every site parameters of its own (the per-site calibration baseline, ``data.predictors:
[SITE]``)."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import xarray as xr

from differland_dist.data import schema
from differland_dist.data.importers import schema_var

log = logging.getLogger(__name__)


def site_onehot(ids: Sequence[str]) -> dict[str, xr.Variable]:
    """Store variables of ``schema.PREDICTOR_SETS["SITE"]``: column k is 1 at site k of
    ``ids`` (pixel order), 0 elsewhere; all ``MAX_SITES`` columns are written (those beyond
    the store's sites are 0). For more sites than that, none (with a warning): a config asking
    for SITE then fails on the missing predictors."""
    if len(ids) > schema.MAX_SITES:
        log.warning("%d sites: more than the %d the SITE predictor set can tell apart; the "
                    "store has no SITE predictors", len(ids), schema.MAX_SITES)
        return {}
    idx = np.arange(len(ids))
    return {v.name: schema_var(v.name, idx == k,
                               source=f"one-hot site index: site {ids[k]}" if k < len(ids)
                               else "one-hot site index: no site")
            for k, v in enumerate(schema.SITE_PREDICTORS)}
