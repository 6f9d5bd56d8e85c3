"""How a stream's model side is formed and aggregated: written once for numpy and JAX.

The loss (``loss/terms.py``, JAX arrays and tracers) and the evaluation
(``evaluation/streams.py``, numpy blocks) call these, so both compare the same quantities:
the model side is the sum of the stream's series in table order; annual aggregation keeps the
first whole years after warm-up, takes each year's mean, and counts a year only where every
step of it is observed (the product of its step weights); patch-level streams sum per patch.
The functions use the arrays' own methods (``reshape``, ``mean``, ``prod``), so they run on
numpy and JAX arrays alike; :func:`patch_sum` picks ``numpy.add.at`` or
``jax.ops.segment_sum``. No JAX at import (the evaluation does not load it).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np


def sum_series(series: Mapping[str, object], names: Sequence[str],
               cast: Callable | None = None):
    """(P, T) ``series[names[0]] + series[names[1]] + ...``, in that order (a stream's model
    side); ``cast`` is applied to the first term before summing (e.g. to float64)."""
    out = series[names[0]] if cast is None else cast(series[names[0]])
    for name in names[1:]:
        out = out + series[name]
    return out


def whole_years(x, steps_per_year: int):
    """(P, T) -> (P, Y, steps_per_year): the first Y = T // steps_per_year whole years."""
    n = x.shape[1] // steps_per_year
    return x[:, : n * steps_per_year].reshape(x.shape[0], n, steps_per_year)


def annual_means(x, steps_per_year: int):
    """(P, T) -> (P, Y) means over the whole years."""
    return whole_years(x, steps_per_year).mean(2)


def annual_weights(w, steps_per_year: int):
    """(P, T) step weights -> (P, Y) the product over each year's steps: 0 for a year with an
    unobserved step (weight 0)."""
    return whole_years(w, steps_per_year).prod(axis=2)


def patch_sum(x, patch, n_patches: int, out: np.ndarray | None = None):
    """(n_patches, ...) sums of the rows of ``x`` (P, ...) by ``patch`` (P,) index.

    numpy arrays: added with ``numpy.add.at`` into ``out`` when given (an accumulator across
    blocks), else into zeros; JAX arrays: ``jax.ops.segment_sum`` (``out`` not allowed)."""
    if isinstance(x, np.ndarray):
        if out is None:
            out = np.zeros((int(n_patches), *x.shape[1:]), x.dtype)
        np.add.at(out, np.asarray(patch), x)
        return out
    if out is not None:
        raise ValueError("patch_sum: out= is for numpy accumulators only")
    # imported here: only for JAX arrays; the evaluation's numpy callers must not load JAX
    import jax

    return jax.ops.segment_sum(x, patch, num_segments=n_patches)
