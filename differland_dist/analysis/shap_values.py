"""SHAP attributions of the environment -> unbounded-parameter relation (Kernel SHAP, as the
paper), for trained networks and for the synthetic Earth's hidden relation.

The explained features are the network's raw predictors plus ``lat`` (the network sees
sigmoid(lat), the hemisphere). Cost: Kernel SHAP evaluates the function on
``nsamples`` x ``background`` rows per explained pixel (all 40 outputs at once); with the
defaults (background 50, nsamples 512) that is 25,600 rows of a small MLP per pixel, and
explaining ``pixels`` pixels for M members is M x pixels of those. Work is split into Ray tasks
over members x pixel chunks (or run in-process with ``executor="local"``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import shap

from differland_dist.errors import DifferlandError
from differland_dist.common.progress import Progress
from differland_dist.storage.location import Location

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShapOptions:
    """Bounded cost: ``background`` rows (k-means-free random pixel sample), ``pixels``
    explained pixels, Kernel SHAP ``nsamples`` coalitions per pixel, ``chunk`` pixels per Ray
    task; ``seed`` fixes both samples."""

    background: int = 50
    pixels: int = 200
    nsamples: int = 512
    chunk: int = 50
    seed: int = 0
    executor: str = "ray"   # "ray" (tasks on the cluster) or "local" (this process)
    address: str | None = None

    def __post_init__(self):
        for k in ("background", "pixels", "nsamples", "chunk"):
            if int(getattr(self, k)) < 1:
                raise DifferlandError(f"shap option {k} must be >= 1, got {getattr(self, k)}")
        if self.executor not in ("ray", "local"):
            raise DifferlandError(f"shap executor must be 'ray' or 'local', got {self.executor!r}")


def _act(name: str) -> Callable[[np.ndarray], np.ndarray]:
    if name == "leaky_relu":
        return lambda x: np.where(x >= 0, x, 0.01 * x)  # jax.nn.leaky_relu's default slope
    if name == "relu":
        return lambda x: np.maximum(x, 0.0)
    if name == "tanh":
        return np.tanh
    if name == "silu":
        return lambda x: x / (1.0 + np.exp(-x))
    if name == "gelu":  # jax.nn.gelu(approximate=True)
        return lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    raise DifferlandError(f"unknown network activation {name!r}")


class NetworkFunction:
    """A trained network as a numpy function: raw features [predictors..., lat] (n, F) ->
    unbounded parameters (n, 40) in the order process, phenology, pools (as ``param_*``)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], activation: str, mean: np.ndarray,
                 std: np.ndarray):
        self.arrays = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
        self.activation = activation
        self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)

    @classmethod
    def from_run(cls, run: Location | str) -> tuple["NetworkFunction", list[str]]:
        """(function, feature names) of a run directory or checkpoint (a URL string: without
        storage options)."""
        # imported here: the SHAP Ray tasks unpickle this module, which stays JAX-free (they run
        # numpy only); these load JAX
        from differland_dist.data.batch import predictor_names
        from differland_dist.network.mlp import network_to_arrays
        from differland_dist.runs.trained import load_trained
        from differland_dist.storage.location import Location

        run = run if isinstance(run, Location) else Location(run)
        tm = load_trained(run)
        names = predictor_names(tm.config.data.predictors)
        return (cls(network_to_arrays(tm.network), tm.network_config.activation,
                    tm.standardizer.mean, tm.standardizer.std), [*names, "lat"])

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float64)
        hemi = 1.0 / (1.0 + np.exp(-X[:, -1:]))
        z = (np.concatenate([hemi, X[:, :-1]], axis=1) - self.mean) / self.std
        a = self.arrays
        act = _act(self.activation)
        h = z[:, 1:]
        i = 0
        while f"net_embed_{i}_weights" in a:
            h = act(h @ a[f"net_embed_{i}_weights"] + a[f"net_embed_{i}_biases"])
            i += 1
        d = h @ a["net_dalec_head_0_weights"] + a["net_dalec_head_0_biases"]
        pools = h @ a["net_pool_head_0_weights"] + a["net_pool_head_0_biases"]
        ph = np.concatenate([h, z[:, :1]], axis=1) @ a["net_pheno_head_0_weights"] + a["net_pheno_head_0_biases"]
        return np.concatenate([d, ph, pools], axis=1)


class TruthFunction:
    """The synthetic Earth's hidden relation as a numpy function of the same raw features
    (``names`` order, ``lat`` last) -> true unbounded parameters (n, 40)."""

    def __init__(self, truth, names: Sequence[str]):
        # imported here: the SHAP Ray tasks unpickle this module, which stays JAX-free (they run
        # numpy only); these load JAX
        from differland_dist.synthetic import TRUTH_FEATURES

        self.truth = truth
        missing = [n for n in TRUTH_FEATURES if n not in names]
        if missing:
            raise DifferlandError(f"the truth needs predictors {missing}, not among the features")
        self.index = [list(names).index(n) for n in TRUTH_FEATURES]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        # imported here: the SHAP Ray tasks unpickle this module, which stays JAX-free (they run
        # numpy only); these load JAX
        from differland_dist.synthetic import apply_truth

        X = np.asarray(X, np.float64)
        return apply_truth(self.truth, X[:, self.index], X[:, -1])


def kernel_shap(f: Callable[[np.ndarray], np.ndarray], background: np.ndarray, X: np.ndarray,
                nsamples: int, seed: int = 0) -> np.ndarray:
    """(n, F, K) Kernel SHAP values of every output of ``f`` at the rows of ``X``."""
    np.random.seed(seed)  # KernelExplainer draws coalitions from numpy's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = shap.KernelExplainer(f, np.asarray(background, np.float64))
        sv = ex.shap_values(np.asarray(X, np.float64), nsamples=int(nsamples), silent=True)
    sv = np.asarray(sv)
    if sv.ndim == 3 and sv.shape[0] != X.shape[0]:  # older layout: (K, n, F)
        sv = np.moveaxis(sv, 0, -1)
    return sv.astype(np.float32)


def sample_pixels(P: int, n: int, seed: int, salt: int) -> np.ndarray:
    """Sorted reproducible sample of ``min(n, P)`` pixel indices."""
    rng = np.random.default_rng([seed, salt])
    return np.sort(rng.choice(P, size=min(n, P), replace=False))


def explain(functions: Mapping[str, Callable[[np.ndarray], np.ndarray]], features: np.ndarray,
            options: ShapOptions = ShapOptions()) -> dict:
    """SHAP values of several functions (members, or the truth) on the same samples.

    Args:
      functions: key -> numpy function of (n, F) raw features.
      features: (P, F) raw features of every land pixel (predictors..., lat).
    Returns ``{"pixels": (n,) explained pixel indices, "background": indices,
    "values": {key: (n, F, K)}}``.
    """
    P = features.shape[0]
    bg_idx = sample_pixels(P, options.background, options.seed, 1)
    px_idx = sample_pixels(P, options.pixels, options.seed, 2)
    bg, X = features[bg_idx], features[px_idx]
    chunks = [slice(a, min(a + options.chunk, len(px_idx))) for a in range(0, len(px_idx), options.chunk)]
    keys = list(functions)
    prog = Progress("shap: tasks (function x pixel chunk)", len(keys) * len(chunks))
    if options.executor == "local":
        vals = {}
        for k in keys:
            parts = []
            for c in chunks:
                parts.append(kernel_shap(functions[k], bg, X[c], options.nsamples, options.seed))
                prog.add()
            vals[k] = np.concatenate(parts)
    else:
        vals = _explain_ray(functions, bg, X, chunks, options, prog)
    log.info("shap: %d function(s) x %d pixels (background %d, nsamples %d)", len(keys),
             len(px_idx), len(bg_idx), options.nsamples)
    return {"pixels": px_idx, "background": bg_idx, "values": vals}


def _explain_ray(functions, bg, X, chunks, options, prog: Progress) -> dict:
    # imported here: Ray loads only when SHAP runs on Ray (executor="local" needs none)
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=options.address or "local", include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(kernel_shap)
        bg_ref = ray.put(bg)
        refs = {k: [task.remote(f, bg_ref, X[c], options.nsamples, options.seed) for c in chunks]
                for k, f in functions.items()}
        pending = [r for rs in refs.values() for r in rs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            prog.add(len(done))
        return {k: np.concatenate(ray.get(r)) for k, r in refs.items()}
    finally:
        if started:  # leave a cluster we joined alone; stop the one we started
            ray.shutdown()


def mean_abs(values: np.ndarray) -> np.ndarray:
    """(n, F, K) -> (F, K) mean |SHAP| over pixels."""
    return np.mean(np.abs(values), axis=0)


def dominant_pft(pft_fractions: np.ndarray, names: Sequence[str], threshold: float = 0.8,
                 min_pixels: int = 10) -> dict[str, np.ndarray]:
    """PFT name -> boolean mask (over the rows of ``pft_fractions`` (n, 10)) of rows whose
    dominant PFT covers at least ``threshold``; PFTs with fewer than ``min_pixels`` rows are
    left out."""
    fr = np.asarray(pft_fractions, np.float64)
    top = np.argmax(fr, axis=1)
    out = {}
    for j, name in enumerate(names):
        m = (top == j) & (fr[:, j] >= threshold)
        if m.sum() >= min_pixels:
            out[name] = m
    return out
