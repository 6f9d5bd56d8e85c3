"""The parameter table: the 40 per-pixel parameters (names, bounds, units, groups), the
lists derived from it, and the one bounded transform.

Everything that needs a parameter or pool name, bound or index reads it from here (DALEC's
forcing and output names are ``vocabulary.dalec_io``). JAX-free at import: the transform
imports ``jax.numpy`` only when given JAX arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


PARAMETER_GROUPS = ("process", "phenology", "pool")


class Bound(NamedTuple):
    """One row of the parameter table.

    Attributes:
      name: the parameter's name within its group (a pool's name, e.g. ``labile``, for the
        initial pools; see :attr:`output_name`).
      lo, hi: the bounds of the bounded transform, in ``units`` (for pools: also the clamp of
        the pool during the run).
      units: table units (UDUNITS-2 spelling: ``vocabulary.units.udunits``).
      description: what it is (the CF ``long_name`` of a process or phenology parameter).
      group: ``process`` (DALEC's 31 process parameters), ``phenology`` (the two dates) or
        ``pool`` (the seven initial pools).
    """

    name: str
    lo: float
    hi: float
    units: str
    description: str
    group: str = "process"

    @property
    def output_name(self) -> str:
        """The name among the network's 40 outputs and in stores (``param_<output_name>``):
        ``init_<pool>`` for an initial pool, else :attr:`name`."""
        return f"init_{self.name}" if self.group == "pool" else self.name

    @property
    def long_name(self) -> str:
        """The CF ``long_name`` of the stored per-pixel parameter."""
        return f"initial {self.description}" if self.group == "pool" else self.description


#: The 40 parameters the network emits per pixel, in network-head order: the 31 DALEC
#: process parameters, the two phenology dates, the seven initial pools (in state order).
PARAMETERS: tuple[Bound, ...] = (
    Bound("decomposition_rate", 1e-5, 0.01, "d-1", "litter to SOM decomposition rate", "process"),
    Bound("f_gpp", 0.2, 0.8, "1", "fraction of GPP respired by plants", "process"),
    Bound("f_fol", 0.01, 0.5, "1", "fraction of NPP allocated to foliage", "process"),
    Bound("f_root", 0.01, 1.0, "1", "fraction of remaining NPP allocated to roots", "process"),
    Bound("leaf_lifespan", 1.001, 8.0, "yr", "leaf lifespan", "process"),
    Bound("tor_wood", 2.5e-5, 0.001, "d-1", "wood turnover rate", "process"),
    Bound("tor_root", 1e-4, 0.01, "d-1", "root turnover rate", "process"),
    Bound("tor_litter", 1e-4, 0.01, "d-1", "litter mineralisation rate", "process"),
    Bound("tor_som", 1e-7, 0.001, "d-1", "SOM mineralisation rate", "process"),
    Bound("Q10", 0.018, 0.08, "K-1", "exponential temperature sensitivity of respiration", "process"),
    Bound("canopy_efficiency", 5.0, 50.0, "gC m-2 d-1", "ACM canopy efficiency", "process"),
    Bound("flab", 0.01, 0.5, "1", "fraction of NPP allocated to labile C", "process"),
    Bound("clab_release_period", 30.4375, 100.0, "d", "labile release period", "process"),
    Bound("leaf_fall_period", 30.4375, 150.0, "d", "leaf fall period", "process"),
    Bound("LCMA", 5.0, 200.0, "gC m-2", "leaf carbon mass per area", "process"),
    Bound("IWUE", 10.0, 50.0, "gC hPa kgH2O-1", "intrinsic WUE (unused by the model)", "process"),
    Bound("runoff_focal_point", 1.0, 100000.0, "mm", "runoff focal point", "process"),
    Bound("field_capacity", 1.0, 10000.0, "mm", "plant-available water at field capacity", "process"),
    Bound("foliar_cf", 0.01, 1.0, "1", "foliar combustion factor", "process"),
    Bound("ligneous_cf", 0.01, 1.0, "1", "ligneous combustion factor", "process"),
    Bound("dom_cf", 0.01, 1.0, "1", "dead organic matter combustion factor", "process"),
    Bound("resilience", 0.01, 1.0, "1", "fire resilience factor", "process"),
    Bound("lab_lifespan", 1.001, 8.0, "yr", "labile pool lifespan", "process"),
    Bound("moisture_factor", 0.01, 1.0, "1", "precipitation sensitivity of respiration", "process"),
    Bound("uWUE", 0.5, 30.0, "gC hPa^0.5 kgH2O-1", "underlying water-use efficiency", "process"),
    Bound("boese_r", 0.01, 0.3, "mm MJ-1", "radiation term of ET", "process"),
    Bound("wilting_point_frac", 0.01, 0.5, "1", "wilting point as a fraction of field capacity", "process"),
    Bound("sif_alpha", 3.0, 35.0, "gC m-2 d-1 per SIF unit", "SIF-GPP slope", "process"),
    Bound("sif_beta_plus_three", 1.0, 9.0, "1", "SIF-GPP intercept plus three", "process"),
    Bound("p_fol", 1e-4, 0.01, "m2 gC-1", "foliar coefficient of the VOD proxy", "process"),
    Bound("p_wood", 1e-6, 8e-5, "m2 gC-1", "wood coefficient of the VOD proxy", "process"),
    # the two phenology dates
    Bound("Bday", 365.25, 1461.0, "d", "labile release date", "phenology"),
    Bound("Fday", 365.25, 1461.0, "d", "leaf fall date", "phenology"),
    # the seven pools, in state order
    Bound("labile", 1.0, 2000.0, "gC m-2", "labile carbon", "pool"),
    Bound("foliar", 1.0, 2000.0, "gC m-2", "foliar carbon", "pool"),
    Bound("root", 1.0, 2000.0, "gC m-2", "fine root carbon", "pool"),
    Bound("wood", 1.0, 100000.0, "gC m-2", "wood carbon", "pool"),
    Bound("litter", 1.0, 2000.0, "gC m-2", "litter carbon", "pool"),
    Bound("som", 1.0, 200000.0, "gC m-2", "soil organic carbon", "pool"),
    Bound("water", 1.0, 10000.0, "mm", "plant-available water", "pool"),
)

#: The 31 DALEC process parameters, in the order the network head emits them.
PROCESS_PARAMETERS: tuple[Bound, ...] = tuple(b for b in PARAMETERS if b.group == "process")
#: The two phenology dates.
PHENOLOGY_PARAMETERS: tuple[Bound, ...] = tuple(b for b in PARAMETERS if b.group == "phenology")
#: The seven pools, in state order; the same bounds clamp the pools during the run.
POOLS: tuple[Bound, ...] = tuple(b for b in PARAMETERS if b.group == "pool")

#: The 40 network outputs / stored per-pixel parameters by name (``init_<pool>`` for pools).
PARAM_NAMES = tuple(b.output_name for b in PARAMETERS)
#: Output name -> its row.
BY_OUTPUT_NAME = {b.output_name: b for b in PARAMETERS}
#: The 31 DALEC process parameters by name (the fields of ``model.structures.ProcessParams``).
PROCESS_NAMES = tuple(b.name for b in PROCESS_PARAMETERS)
PHENO_NAMES = tuple(b.name for b in PHENOLOGY_PARAMETERS)
POOL_NAMES = tuple(b.name for b in POOLS)
N_PARAMS, N_PROCESS, N_PHENO, N_POOLS = (
    len(PARAM_NAMES), len(PROCESS_NAMES), len(PHENO_NAMES), len(POOL_NAMES))


def bounds_array(table: tuple[Bound, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) float32 arrays for a table, in table order."""
    lo = np.array([b.lo for b in table], dtype=np.float32)
    hi = np.array([b.hi for b in table], dtype=np.float32)
    return lo, hi


def all_bounds() -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) float64 (40,) of the table's 31 process, 2 phenology and 7 pool parameters, in
    network-head order (float32 values of the table, as the network sees them)."""
    lo, hi = bounds_array(PARAMETERS)
    return lo.astype(np.float64), hi.astype(np.float64)


def _xp(*arrays):
    """numpy for numpy/Python inputs (float64 stays float64: synthesis and evaluation),
    jax.numpy otherwise (the network's traced outputs)."""
    if all(isinstance(a, (np.ndarray, np.generic, float, int)) for a in arrays):
        return np
    # imported here: only for JAX arrays; this module's own code is JAX-free for its numpy callers
    import jax.numpy as jnp

    return jnp


def to_bounded(x, lo, hi):
    """Map unbounded x to [lo, hi]: ``lo * (hi/lo) ** (atan(x)/pi + 0.5)`` (log-uniform).

    The one bounded transform: JAX arrays give JAX arrays (the network head), numpy arrays
    give numpy arrays in their own precision."""
    xp = _xp(x, lo, hi)
    return lo * (hi / lo) ** (xp.arctan(x) / xp.pi + 0.5)


def to_unbounded(p, lo, hi):
    """Inverse of :func:`to_bounded`, for p strictly inside (lo, hi) (numpy or JAX, as there)."""
    xp = _xp(p, lo, hi)
    return xp.tan((xp.log(p / lo) / xp.log(hi / lo) - 0.5) * xp.pi)
