"""Speed of the forward rollout and of the loss with its gradient, on synthetic forcing."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from differland_dist.vocabulary.labels import Labels
from differland_dist.loss import LossConfig, network_value_and_grad
from differland_dist.model.config import ModelConfig
from differland_dist.vocabulary.dalec_io import FORCING_NAMES
from differland_dist.model.rollout import simulate, simulate_series
from differland_dist.model.structures import Forcing
from differland_dist.network import apply_network, init_network, to_parameters

log = logging.getLogger(__name__)


def synthetic_batch(pixels: int, months: int, seed: int = 0):
    """Plausible monthly forcing (P, T, 17), :class:`Labels` of (P, T) float32 leaves and
    standardised predictors (P, 21)."""
    rng = np.random.default_rng(seed)
    t = np.arange(months)
    lat = rng.uniform(-50, 65, pixels)
    season = np.cos(2 * np.pi * (t[None, :] - 6.5) / 12) * np.sign(lat)[:, None]
    tmean = rng.uniform(-5, 25, pixels)[:, None] + 10 * season * np.abs(lat[:, None]) / 60
    cols = {
        "days": 15.2 + 30.4375 * t, "t_min": tmean - 5, "t_max": tmean + 5,
        "swrad": np.clip(18 + 10 * season, 2, 35), "co2": 370 + 2 * t / 12,
        "doy": (15.2 + 30.4375 * t) % 365.25,
        "burned_area": (rng.random((pixels, months)) < 0.01) * 0.1,
        "vpd": np.clip(8 + 6 * season, 0.5, 40), "precip": rng.gamma(2.0, 1.0, (pixels, months)),
        "lat": lat[:, None], "delta_t": 30.0, "mat": tmean.mean(1, keepdims=True), "map_daily": 2.0,
    }
    met = np.zeros((pixels, months, len(FORCING_NAMES)), np.float32)  # norm_* columns zero
    for name, x in cols.items():
        met[..., FORCING_NAMES.index(name)] = x
    # constant observations, weight 1, of four streams
    observed = {"sif": 1.0, "lai": 2.0, "et_gleam": 2.0, "nbe": 0.0}
    labels = Labels.from_observations(
        {s: np.full((pixels, months), v, np.float32) for s, v in observed.items()},
        {s: np.ones((pixels, months), np.float32) for s in observed}, pixels, months)
    pred = rng.normal(size=(pixels, 21)).astype(np.float32)
    return met, labels, pred


@dataclass(frozen=True)
class BenchResult:
    device: str
    pixels: int
    months: int
    forward_pixel_months_per_s: float
    grad_pixel_months_per_s: float
    forward_published_layout_pixel_months_per_s: float
    forward_s_median: float
    grad_s_median: float
    forward_published_layout_s_median: float
    compile_s: float
    grad_temp_bytes: int | None
    repeats: int
    pixel_block: int


def _time_interleaved(fns, repeats):
    """Median seconds per call of each of ``fns``, calling them in turn ``repeats`` times, so
    that load changes on a shared machine affect all of them alike."""
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, ts):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in ts]


def run_bench(pixels: int = 2048, months: int = 276, repeats: int = 5, patch_size: int = 320,
              checkpoint_every: int = -1, unroll: int = 1, pixel_block: int = 0) -> BenchResult:
    met, labels, pred = synthetic_batch(pixels, months)
    net = init_network(jax.random.PRNGKey(0), pred.shape[1] - 1)
    met, pred = jnp.asarray(met), jnp.asarray(pred)
    labels = jax.tree.map(jnp.asarray, labels)
    n_dev = jax.local_device_count()
    if n_dev > 1 and pixels % n_dev == 0:
        # every local device (GPU, or a CPU core exposed as a host device) takes a slice of
        # the pixels: rollouts of different pixels are independent
        sh = NamedSharding(Mesh(np.array(jax.local_devices()), ("pixel",)), PartitionSpec("pixel"))
        met, labels, pred = (jax.device_put(x, sh) for x in (met, labels, pred))  # labels: every leaf
    p = to_parameters(apply_network(net, pred))
    dalec, pheno, pools = p.process.stack(), jnp.stack(p.phenology, -1), p.initial_pools.stack()

    mc = ModelConfig(checkpoint_every=checkpoint_every, unroll=unroll, pixel_block=pixel_block)
    # parameters are arguments, as in inference (closure constants would let XLA fold the
    # parameter-only work into the program)
    fwd_args = (met, dalec, pheno, pools)
    fwd = jax.jit(lambda *a: simulate_series(*a, pixel_block=mc.block()))
    fwd_pub = jax.jit(lambda *a: simulate(*a, pixel_block=mc.block()))
    t0 = time.perf_counter()
    jax.block_until_ready(fwd(*fwd_args))
    jax.block_until_ready(fwd_pub(*fwd_args))
    patch = jnp.asarray(np.arange(pixels) // patch_size, jnp.int32)
    if n_dev > 1 and pixels % n_dev == 0:
        patch = jax.device_put(patch, sh)
    n_patches = int(-(-pixels // patch_size))
    # forcing field-major, as a calibration's call holds it (distributed/shard.py)
    fields = jnp.moveaxis(met, -1, 0)
    args = (net, pred, Forcing.from_fields(fields), labels, patch, jnp.ones(pixels, jnp.float32),
            n_patches, LossConfig(), mc)
    jax.block_until_ready(network_value_and_grad(*args))
    compile_s = time.perf_counter() - t0
    temp = None
    try:
        ma = network_value_and_grad.lower(*args).compile().memory_analysis()
        temp = int(ma.temp_size_in_bytes) if ma is not None else None
    except Exception as e:  # not every backend reports it
        log.debug("no memory analysis: %s", e)
    tf, tp, tg = _time_interleaved([lambda: fwd(*fwd_args), lambda: fwd_pub(*fwd_args),
                                    lambda: network_value_and_grad(*args)], repeats)
    dev = jax.devices()[0]
    pm = pixels * months
    return BenchResult(f"{dev.platform}:{dev.device_kind} x{n_dev}", pixels, months, pm / tf,
                       pm / tg, pm / tp, tf, tg, tp, compile_s, temp, repeats, mc.block())


def as_dict(r: BenchResult) -> dict:
    return asdict(r)
