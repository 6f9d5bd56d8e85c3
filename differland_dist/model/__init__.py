"""DALEC 993: named structures, the step and batched rollouts (pure JAX).

Its parameter table and the names of its forcing and outputs are the shared vocabulary
(``differland_dist.vocabulary.parameters``, ``differland_dist.vocabulary.dalec_io``).
"""

from differland_dist.model.dalec import StepConstants, prepare, step
from differland_dist.model.rollout import (
    default_checkpoint_every, rollout, simulate, simulate_series)
from differland_dist.model.structures import (
    Fluxes, Forcing, Parameters, Phenology, Pools, ProcessParams)

__all__ = [
    "StepConstants", "prepare", "step", "rollout", "simulate", "simulate_series",
    "default_checkpoint_every", "Fluxes", "Forcing", "Parameters", "Phenology", "Pools",
    "ProcessParams",
]
