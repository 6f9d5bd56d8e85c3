"""DALEC 993: parameter table, named structures, the step and batched rollouts (pure JAX)."""

from differland_dist.model.dalec import StepConstants, prepare, step
from differland_dist.model.parameters import (
    FORCING_NAMES, OUTPUTS, PARAM_NAMES, PHENO_NAMES, POOL_NAMES, PHENOLOGY_PARAMETERS, POOLS,
    PROCESS_PARAMETERS, bounds_array, to_bounded, to_unbounded)
from differland_dist.model.rollout import (
    default_checkpoint_every, rollout, simulate, simulate_series)
from differland_dist.model.structures import (
    Fluxes, Forcing, Parameters, Phenology, Pools, ProcessParams)

__all__ = [
    "FORCING_NAMES", "OUTPUTS", "PARAM_NAMES", "PHENO_NAMES", "POOL_NAMES", "PHENOLOGY_PARAMETERS",
    "POOLS", "PROCESS_PARAMETERS", "bounds_array", "to_bounded", "to_unbounded", "StepConstants",
    "prepare", "step", "rollout", "simulate", "simulate_series", "default_checkpoint_every", "Fluxes", "Forcing",
    "Parameters", "Phenology", "Pools", "ProcessParams",
]
