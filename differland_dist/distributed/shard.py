"""The computation a worker does for its patches, independent of Ray.

A :class:`Shard` streams the patches it is asked for from the store (the driver never
carries the data) through a bounded cache (:class:`~differland_dist.data.reader.PatchCache`,
``data.cache_bytes``), reading the next step's patches in the background while it computes.
Every patch is padded to the store's largest patch, and per-patch loss terms and gradients
come from one jit-compiled function of a fixed shape: ``group`` patches at a time, vmapped
over patches. Each patch's gradient is thus the same bits whichever worker computes it and
whatever other patches share its call, so the driver's fixed-order sum makes training
independent of the number of workers.

With several local devices (GPUs, TPU chips) the group axis is sharded across them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from differland_dist.labels import Labels

log = logging.getLogger(__name__)

#: Padded pixels per compiled call and device when ``training.pixels_per_call`` is not set:
#: on CPUs a call's cost grows with its pixels from a few hundred on (no gain in batching
#: more); a GPU or TPU needs ~1e5 pixels in flight to saturate (``differland bench``).
DEFAULT_PIXELS_PER_CALL = {"cpu": 2048, "gpu": 131072, "cuda": 131072, "rocm": 131072,
                           "tpu": 131072}


def patches_per_call(training, patch_size: int, n_devices: int = 1, platform: str = "cpu",
                     cap: int | None = None) -> int:
    """Patches per compiled call: ``training.patches_per_call`` if set, else
    ``training.pixels_per_call`` (or the platform's default) padded pixels per device over
    ``patch_size``, times the devices; at most ``cap`` (rounded up to whole devices)."""
    n_devices = max(1, int(n_devices))
    if training.patches_per_call:
        g = int(training.patches_per_call)
    else:
        ppc = training.pixels_per_call or DEFAULT_PIXELS_PER_CALL.get(platform, 2048)
        g = max(1, int(ppc) // max(1, int(patch_size))) * n_devices
    if cap is not None:
        g = min(g, max(1, int(cap)))
    return int(np.ceil(g / n_devices) * n_devices)


@dataclass
class PatchArrays:
    """One patch padded to S pixels: raw predictors (S, 1+n), forcing (S, T, 17), labels
    (:class:`Labels` of (S, T) leaves, with the store's ``time_test`` if it has one), valid
    (S,) 1/0."""

    predictors_raw: np.ndarray
    forcing: np.ndarray
    labels: Labels
    valid: np.ndarray
    n_pixels: int

    @property
    def nbytes(self) -> int:
        return int(self.predictors_raw.nbytes + self.forcing.nbytes + self.labels.nbytes
                   + self.valid.nbytes)


def pad_patch(forcing, predictors_raw, labels: Labels, size: int) -> PatchArrays:
    """Pad a patch's pixels to ``size`` by repeating its first pixel with valid = 0.

    Copies of a real pixel keep the padded rollout finite (zeros could divide by zero);
    their labels' weights are zero and ``valid`` removes them from patch means.
    """
    n = forcing.shape[0]
    if n > size:
        raise ValueError(f"patch of {n} pixels exceeds max_patch_size {size}")
    idx = np.concatenate([np.arange(n), np.zeros(size - n, np.int64)])
    real = np.arange(size) < n
    lab = labels.map(lambda a: np.asarray(a)[idx])
    lab = lab._replace(weight={k: np.where(real[:, None], w, np.float32(0.0))
                               for k, w in lab.weight.items()})
    return PatchArrays(predictors_raw[idx], forcing[idx], lab, real.astype(np.float32), n)


class Shard:
    """A worker's view of the store: streamed, cached patches and the compiled per-patch
    loss/gradient.

    Args:
      config: the experiment config (:class:`differland_dist.config.ExperimentConfig`).
      patch_ids: patches to read now (the rest are read when first asked for).
      group: patches per compiled call (fixed; padded with empty patches).
      storage_options: fsspec options added to ``config.data.storage_options``.
      cache_bytes: bound on the cached patches (default ``config.data.cache_bytes``).
    """

    def __init__(self, config, patch_ids: Sequence[int] = (), group: int = 1,
                 storage_options: dict | None = None, cache_bytes: int | None = None):
        import jax

        from differland_dist.data.batch import predictor_names
        from differland_dist.data.reader import PatchCache, PatchReader
        from differland_dist.data.store import open_store

        self.config = config
        self.group = max(1, int(group))
        t0 = time.perf_counter()
        so = dict(config.data.storage_options)
        so.update(storage_options or {})
        self.store = open_store(config.data.url, so, validate=False)
        # Pad to the largest patch actually in the store (a property of the data, so every
        # worker compiles the same shape).
        self.size = max(s.stop - s.start for s in self.store.patch_slices.values())
        self.loss_cfg = config.loss_for_store(self.store.steps_per_year)
        names = predictor_names(config.data.predictors)
        # The patch cache bounds the decoded data a worker holds; the reader's own chunk cache
        # is used only on disk ("memory" would keep every chunk, unbounded).
        chunk_cache = None if config.data.cache == "memory" else config.data.cache
        self.reader = PatchReader(self.store, names, config.data.products, cache=chunk_cache)
        self.cache = PatchCache(self._read, lambda a: a.nbytes,
                                config.data.cache_bytes if cache_bytes is None else cache_bytes)
        self.devices = jax.devices()
        self._fns: dict = {}
        if len(patch_ids):
            self.cache.get(patch_ids)
        self.read_s = time.perf_counter() - t0
        log.info("shard: %d patches (%d pixels) read in %.1fs; cache %.3g MB; %d device(s) %s",
                 len(self.cache), self.pixels(patch_ids), self.read_s, self.cache.cache_bytes / 1e6,
                 len(self.devices), self.devices[0].platform)

    def _read(self, ids: list[int]) -> dict[int, PatchArrays]:
        """The padded arrays of patches ``ids``, read from the store in one batch (the reader
        fetches their chunks concurrently)."""
        from differland_dist.model.structures import Forcing
        from differland_dist.network.standardize import raw_inputs

        b = self.reader.read(ids)
        raw = raw_inputs(b.predictors, Forcing.column(b.forcing, "lat")[:, 0])
        out, start = {}, 0
        for p in ids:  # pixels come back in the order of the patch ids, each patch contiguous
            n = int(np.count_nonzero(b.patch == p))
            sl = slice(start, start + n)
            out[int(p)] = pad_patch(b.forcing[sl], raw[sl], b.labels.map(lambda a: a[sl]),
                                    self.size)
            start += n
        return out

    def prefetch(self, patch_ids: Sequence[int]) -> None:
        """Start reading patches needed soon (the next step's) in the background."""
        self.cache.prefetch(patch_ids)

    def pixels(self, patch_ids: Sequence[int]) -> int:
        sl = self.store.patch_slices
        return int(sum(sl[int(p)].stop - sl[int(p)].start for p in patch_ids))

    # -- statistics for the predictor standardisation -------------------------------------
    def predictor_sums(self, patch_ids: Sequence[int]) -> dict[int, tuple[int, np.ndarray, np.ndarray]]:
        """Per patch: (pixels, sum, sum of squares) of the raw predictors, float64. Reads only
        the per-pixel variables (not the series), without touching the cache."""
        from differland_dist.network.standardize import raw_inputs

        ids = [int(p) for p in patch_ids]
        out = {}
        for i in range(0, len(ids), 256):  # bounded reads, whatever the store's size
            part = ids[i:i + 256]
            patch, lat, pred = self.reader.read_predictors(part)
            raw = raw_inputs(pred, lat)
            for p in part:
                x = raw[patch == p]
                out[p] = (int(x.shape[0]), x.sum(0), (x * x).sum(0))
        return out

    # -- the compiled per-patch function --------------------------------------------------
    def _fn(self, with_grad: bool):
        key = with_grad
        if key in self._fns:
            return self._fns[key]
        import jax
        import jax.numpy as jnp

        from differland_dist.loss.objective import network_loss
        from differland_dist.model.structures import Forcing

        cfg, loss_cfg, model_cfg = self.config, self.loss_cfg, self.config.model
        act = cfg.network.activation

        def per_patch(net, pred, forcing, labels, valid, mean, std, test):
            x = (pred - mean) / std
            # a store split by time (time_test) trains on its train steps, scores the test ones
            labels = labels.time_split(test)
            zeros = jnp.zeros(pred.shape[0], jnp.int32)
            return network_loss(net, x, Forcing.from_array(forcing), labels, zeros, valid, 1,
                                loss_cfg, model_cfg, act)

        if with_grad:
            f = jax.vmap(jax.value_and_grad(per_patch, has_aux=True),
                         in_axes=(None, 0, 0, 0, 0, None, None, None))
        else:
            f = jax.vmap(per_patch, in_axes=(None, 0, 0, 0, 0, None, None, None))
        fn = jax.jit(f)
        if len(self.devices) > 1:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec as Ps

            mesh = Mesh(np.array(self.devices), ("patch",))
            split = NamedSharding(mesh, Ps("patch"))
            rep = NamedSharding(mesh, Ps())
            fn = jax.jit(f, in_shardings=(rep, split, split, split, split, rep, rep, rep))
        self._fns[key] = fn
        return fn

    def _groups(self, patch_ids: Sequence[int]):
        g = self.group
        if len(self.devices) > 1:  # the group axis is split across devices
            g = int(np.ceil(g / len(self.devices)) * len(self.devices))
        ids = [int(p) for p in patch_ids]
        for i in range(0, len(ids), g):
            chunk = ids[i:i + g]
            arrays = self.cache.get(chunk)
            # pad the group with copies of its first patch; valid = 0 removes them from every term
            while len(arrays) < g:
                a = arrays[0]
                arrays.append(PatchArrays(a.predictors_raw, a.forcing, a.labels, np.zeros_like(a.valid), 0))
            yield chunk, arrays

    def compute(self, net, patch_ids: Sequence[int], mean, std, with_grad: bool = True, test: bool = False):
        """Per patch (in the order given): (terms dict of floats, flat gradient or None).

        ``net`` is a NetworkParams pytree; gradients come back flattened in the order of
        ``jax.flatten_util.ravel_pytree(net)``.
        """
        import jax
        import jax.numpy as jnp
        from jax.flatten_util import ravel_pytree

        fn = self._fn(with_grad)
        mean = jnp.asarray(mean, jnp.float32)
        std = jnp.asarray(std, jnp.float32)
        results = []
        for chunk, arrays in self._groups(patch_ids):
            pred, forcing, valid = (jnp.asarray(np.stack([getattr(a, k) for a in arrays]))
                                    for k in ("predictors_raw", "forcing", "valid"))
            labels = jax.tree.map(jnp.asarray, Labels.stack([a.labels for a in arrays]))
            out = fn(net, pred, forcing, labels, valid, mean, std, jnp.asarray(test))
            if with_grad:
                (total, terms), grads = out
                flat = jax.vmap(lambda g: ravel_pytree(g)[0])(grads)
                flat = np.asarray(flat)
            else:
                total, terms = out
                flat = None
            total = np.asarray(total)
            terms = {k: np.asarray(v) for k, v in terms.items()}
            for i, p in enumerate(chunk):
                t = {k: float(v[i]) for k, v in terms.items()}
                t["loss"] = float(total[i])
                results.append((int(p), t, None if flat is None else flat[i]))
        return results

    def pixel_months(self, patch_ids: Sequence[int]) -> int:
        return self.pixels(patch_ids) * int(self.store.n_time)

    def close(self) -> None:
        self.cache.close()
        self.reader.close()
