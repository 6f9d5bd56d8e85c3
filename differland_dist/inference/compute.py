"""What one inference task computes: predictors -> network -> parameters -> DALEC series.

Pure functions of arrays (importing JAX initialises no device: that happens at the first
computation, in the Ray actors that call these). The network-input rule is
:func:`differland_dist.network.standardize.network_inputs`, the bounded transform
``vocabulary.parameters.to_bounded``; :func:`network_parameters` is the one network -> physical
parameters step (inference, the ``TrainedModel`` façade, benchmarks).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from differland_dist.data.batch import (
    FORCING_PIXEL_VARS, FORCING_VARS, assemble_forcing, assemble_predictors, predictor_names)
from differland_dist.data.reader import PatchReader
from differland_dist.data.schema import PER_PIXEL_FORCING, PREDICTOR_SETS, by_pixel_name
from differland_dist.errors import CheckpointError, ConfigError, DataValidationError
from differland_dist.vocabulary.series import SERIES_BY_NAME, model_outputs_for
from differland_dist.model.rollout import rollout, simulate
from differland_dist.model.structures import Forcing
from differland_dist.network.mlp import apply_network, to_parameters
from differland_dist.network.standardize import Standardizer, network_inputs

__all__ = ["network_inputs", "network_parameters", "flat_parameters", "read_patches",
           "simulate_batch", "check_standardizer", "pad_pixels", "forward_fn", "compiled_forward",
           "required_store_vars", "input_variables", "check_finite", "check_store_inputs",
           "stack_inputs"]


def network_parameters(net, inputs, activation: str):
    """Physical :class:`~differland_dist.model.structures.Parameters` (fields (P,)) of a network
    for standardised inputs (P, 1 + n): the network head, then the bounded transform."""
    return to_parameters(apply_network(net, inputs, activation))


def flat_parameters(params):
    """(P, 40) of Parameters: 31 process, 2 phenology, 7 initial pools (network-head order)."""
    return jnp.concatenate([params.process.stack(), jnp.stack(params.phenology, axis=-1),
                            params.initial_pools.stack()], axis=-1)


def read_patches(trained, store, patch_ids: Sequence[int]):
    """One :class:`PatchBatch` of ``patch_ids`` with the predictors and products the trained
    run was calibrated on."""
    cfg = trained.config.data
    with PatchReader(store, predictor_names(cfg.predictors), cfg.products) as reader:
        return reader.read([int(p) for p in patch_ids])


def simulate_batch(trained, batch, network=None):
    """Parameters and all 44 outputs of a trained model for a :class:`PatchBatch`.

    ``trained``: a ``runs.load_trained`` record or a :class:`differland_dist.notebook.trained.
    TrainedModel`; ``network``: other weights of the same architecture (e.g. the untrained
    initialisation) instead of the trained ones.

    Returns (Parameters of (P,) fields, outputs (P, T, 44) numpy array).
    """
    if not hasattr(trained, "standardizer"):  # the TrainedModel façade: its loaded checkpoint
        trained = trained.record
    lat = Forcing.column(batch.forcing, "lat")[:, 0]
    x = network_inputs(batch.predictors, lat, trained.standardizer)
    net = trained.network if network is None else network
    p = network_parameters(net, jnp.asarray(x), trained.network_config.activation)
    _, out = simulate(jnp.asarray(batch.forcing), p.process.stack(), jnp.stack(p.phenology, -1),
                      p.initial_pools.stack(), closed_budget=trained.config.model.closed_budget)
    return p, np.asarray(out)


def check_standardizer(standardizer: Standardizer, names: Sequence[str]) -> None:
    """Raise CheckpointError unless the standardiser covers [hemisphere] + ``names``."""
    n = np.shape(standardizer.mean)[0]
    if n != len(names) + 1:
        raise CheckpointError(f"the checkpoint's standardisation has {n} columns but its predictor "
                              f"sets give {len(names)} predictors + the hemisphere feature")
    if len(standardizer.names) == n and tuple(standardizer.names[1:]) != tuple(names):
        raise CheckpointError(f"the checkpoint's standardised predictors {list(standardizer.names[1:])} "
                              f"differ from its predictor sets' {list(names)}")


def pad_pixels(x: np.ndarray, size: int) -> np.ndarray:
    """Pad axis 0 to ``size`` by repeating the last row (one compiled shape for every task)."""
    n = x.shape[0]
    if n == size:
        return x
    if n > size or n == 0:
        raise ValueError(f"cannot pad {n} rows to {size}")
    return np.concatenate([x, np.repeat(x[-1:], size - n, axis=0)], axis=0)


@lru_cache(maxsize=8)
def forward_fn(series: tuple[str, ...], activation: str, closed_budget: bool, unroll: int = 1) -> Callable:
    """A jitted ``f(net, predictors (P, 1+n), forcing (P, T, 17)) -> (params (P, 40),
    series (P, T, len(series)))``: physical parameters (31 process, 2 phenology, 7 initial
    pools) and the output series (sums of model outputs, see ``vocabulary.series.SERIES``), float32."""
    needed = model_outputs_for(series)
    specs = [SERIES_BY_NAME[n] for n in series]

    def total(out, sources):
        y = out[sources[0]]
        for src in sources[1:]:
            y = y + out[src]
        return y

    @jax.jit
    def f(net, predictors, forcing):
        params = network_parameters(net, predictors, activation)
        _, out, _ = rollout(params, Forcing.from_array(forcing), outputs=needed,
                            closed_budget=closed_budget, unroll=unroll)
        ys = [total(out, s.sources) for s in specs]
        return flat_parameters(params), jnp.stack(ys, axis=-1)

    return f


_COMPILED: dict[tuple, object] = {}


def compiled_forward(net, series: Sequence[str], activation: str, closed_budget: bool,
                     size: int, n_inputs: int, n_time: int, unroll: int = 1):
    """:func:`forward_fn` compiled ahead of time for ``size`` pixels, ``n_inputs`` network
    inputs and ``n_time`` steps (cached in this process: workers sharing it compile once)."""
    shapes = tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(net))
    key = (tuple(series), activation, bool(closed_budget), int(unroll), int(size),
           int(n_inputs), int(n_time), shapes)
    if key not in _COMPILED:
        f = forward_fn(tuple(series), activation, bool(closed_budget), int(unroll))
        spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), net)
        _COMPILED[key] = f.lower(spec, jax.ShapeDtypeStruct((size, n_inputs), np.float32),
                                 jax.ShapeDtypeStruct((size, n_time, 17), np.float32)).compile()
    return _COMPILED[key]


def required_store_vars(predictor_names: Sequence[str]) -> list[str]:
    """Store variables inference reads (forcing and raw predictors; ``null`` is built)."""
    return list(dict.fromkeys([*FORCING_VARS, *FORCING_PIXEL_VARS,
                               *(p for p in predictor_names if p != "null")]))


def input_variables(array_names: Sequence[str], predictor_names: Sequence[str]) -> list[str]:
    """Every store variable an inference task reads: :func:`required_store_vars` plus the
    ``<name>_by_pixel`` overrides of per-step forcing the store has."""
    have = set(array_names)
    return [*required_store_vars(predictor_names),
            *(by_pixel_name(v) for v in PER_PIXEL_FORCING if by_pixel_name(v) in have)]


def check_finite(values: Mapping[str, np.ndarray], dims: Mapping[str, tuple[str, ...]],
                 first_pixel: int, url: str) -> None:
    """DataValidationError naming each variable with NaN/inf values and their pixel/time range
    (pixels counted from ``first_pixel``), so that no task turns a gap into NaN series.

    Args:
      values: variable -> array read for pixels ``first_pixel...`` (per-pixel variables) or
        whole (per-step variables); ``dims``: their dimension names.
    """
    problems = []
    for name in sorted(values):
        v = np.asarray(values[name])
        if v.dtype.kind != "f":
            continue
        bad = ~np.isfinite(v)
        if not bad.any():
            continue
        d = dims[name]
        where = []
        for ax, dim in enumerate(d):
            other = tuple(a for a in range(v.ndim) if a != ax)
            hit = np.flatnonzero(bad.any(axis=other) if other else bad)
            off = first_pixel if dim == "pixel" else 0
            lo, hi = int(hit[0]) + off, int(hit[-1]) + off
            label = {"pixel": "pixels", "time": "time steps"}.get(dim, dim)
            where.append(f"{label} {lo}" if lo == hi else f"{label} {lo}..{hi}")
        problems.append(f"{name}: {int(bad.sum())} missing or infinite value(s) at "
                        f"{', '.join(where)}; inference needs gap-free inputs")
    if problems:
        raise DataValidationError(problems, source=url)


def check_store_inputs(array_names: Sequence[str], predictor_sets: Sequence[str],
                       predictor_names: Sequence[str], url: str) -> None:
    """ConfigError naming every missing variable (and its predictor set) before any work."""
    have = set(array_names)
    missing = [v for v in required_store_vars(predictor_names) if v not in have]
    if missing:
        sets = sorted({s for s in predictor_sets for v in missing if v in PREDICTOR_SETS.get(s, ())})
        why = f" (predictor set(s) {', '.join(sets)} of the checkpoint's config)" if sets else ""
        raise ConfigError(f"{url} lacks variable(s) {missing}{why}; the checkpoint was trained "
                          f"with predictor sets {list(predictor_sets)}")


def stack_inputs(v: Mapping[str, np.ndarray], predictor_names: Sequence[str],
                 standardizer: Standardizer) -> tuple[np.ndarray, np.ndarray]:
    """(standardised predictors (P, 1+n), forcing (P, T, 17)) from store variables."""
    forcing = assemble_forcing(v)
    raw = assemble_predictors(v, list(predictor_names), forcing.shape[0])
    return network_inputs(raw, np.asarray(v["lat"]), standardizer), forcing
