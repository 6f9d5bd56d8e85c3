"""Named pytrees of the model: forcing, pools, parameters and the 44 diagnostic fluxes.

Fields are arrays of any common shape (a pixel, a batch of pixels, or (pixels, time));
the field order of each structure is the order of the matching table in
:mod:`differland_dist.vocabulary.parameters`, so ``stack``/``from_array`` convert to and from the
column layout of the golden files.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

from differland_dist.vocabulary.dalec_io import OUTPUTS
from differland_dist.vocabulary.parameters import PROCESS_NAMES


class Forcing(NamedTuple):
    """Forcing of one step (or a series). Units as in ``parameters.FORCING``."""

    days: Any         # days since 2001-01-01, mid-step
    t_min: Any        # degC
    t_max: Any        # degC
    swrad: Any        # MJ m-2 d-1
    co2: Any          # ppm
    doy: Any          # day of year
    burned_area: Any  # fraction burnt in the step
    vpd: Any          # hPa
    precip: Any       # mm d-1
    lat: Any          # degrees north
    delta_t: Any      # days in the step
    mat: Any          # long-term mean air temperature, degC
    map_daily: Any    # long-term mean precipitation, mm d-1

    @classmethod
    def from_array(cls, met) -> "Forcing":
        """From an array whose last axis holds the 17 golden-file columns (norm_* ignored)."""
        return cls(*(met[..., i] for i in range(len(cls._fields))))

    @classmethod
    def from_fields(cls, fields) -> "Forcing":
        """From a field-major array (F >= 13, ...) whose leading axis holds the fields in
        order: each field is then a contiguous block, where slicing columns out of (P, T, 17)
        makes XLA copy strided data (see ``distributed.shard.CachedPatch``)."""
        return cls(*(fields[i] for i in range(len(cls._fields))))

    @classmethod
    def column(cls, met, name: str):
        """One field of a packed (..., 17) forcing array by name, e.g. ``"lat"`` -> (...)."""
        return met[..., cls._fields.index(name)]


class Pools(NamedTuple):
    """The seven pools: carbon in gC m-2, water in mm."""

    labile: Any
    foliar: Any
    root: Any
    wood: Any
    litter: Any
    som: Any
    water: Any

    @classmethod
    def from_array(cls, a) -> "Pools":
        return cls(*(a[..., i] for i in range(7)))

    def stack(self):
        return jnp.stack(self, axis=-1)


#: The 31 process parameters as named fields (order and names from the parameter table).
ProcessParams = NamedTuple("ProcessParams", [(n, Any) for n in PROCESS_NAMES])
ProcessParams.from_array = classmethod(lambda cls, a: cls(*(a[..., i] for i in range(len(cls._fields)))))
ProcessParams.stack = lambda self: jnp.stack(self, axis=-1)


class Phenology(NamedTuple):
    """Phenology dates, days."""

    Bday: Any
    Fday: Any

    @classmethod
    def from_array(cls, a) -> "Phenology":
        return cls(a[..., 0], a[..., 1])


class Parameters(NamedTuple):
    """Physical (bounded) parameters of a pixel or batch of pixels."""

    process: ProcessParams
    phenology: Phenology
    initial_pools: Pools

    @classmethod
    def from_arrays(cls, dalec, pheno, pools) -> "Parameters":
        """From arrays (..., 31), (..., 2), (..., 7)."""
        return cls(ProcessParams.from_array(dalec), Phenology.from_array(pheno), Pools.from_array(pools))


#: The 44 diagnostics of one step, named as the published outputs.
Fluxes = NamedTuple("Fluxes", [(n, Any) for n in OUTPUTS])
Fluxes.stack = lambda self: jnp.stack(self, axis=-1)
