"""The computation a worker does for its patches, independent of Ray.

A :class:`Shard` owns a set of patches: it reads them from the store once (the driver never
carries the data), pads every patch to the store's ``max_patch_size`` pixels, and computes
per-patch loss terms and gradients with one jit-compiled function of a fixed shape:
``group`` patches at a time, vmapped over patches. Each patch's gradient is thus the same
bits whichever worker computes it and whatever other patches share its group, so the
driver's fixed-order sum makes training independent of the number of workers.

With several local devices (GPUs, TPU chips) the group axis is sharded across them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class PatchArrays:
    """One patch padded to S pixels: predictors (S, 1+n) standardised, forcing (S, T, 17),
    labels (S, T, 24), valid (S,) 1/0, raw predictor sums for standardisation."""

    predictors_raw: np.ndarray
    forcing: np.ndarray
    labels: np.ndarray
    valid: np.ndarray
    n_pixels: int


def pad_patch(forcing, predictors_raw, labels, size: int) -> PatchArrays:
    """Pad a patch's pixels to ``size`` by repeating its first pixel with valid = 0.

    Copies of a real pixel keep the padded rollout finite (zeros could divide by zero);
    their labels' weights are zero and ``valid`` removes them from patch means.
    """
    n = forcing.shape[0]
    if n > size:
        raise ValueError(f"patch of {n} pixels exceeds max_patch_size {size}")
    idx = np.concatenate([np.arange(n), np.zeros(size - n, np.int64)])
    lab = labels[idx].copy()
    lab[n:, :, 1::2] = 0.0
    valid = (np.arange(size) < n).astype(np.float32)
    return PatchArrays(predictors_raw[idx], forcing[idx], lab, valid, n)


class Shard:
    """Patches of one worker and the compiled per-patch loss/gradient.

    Args:
      config: the experiment config (:class:`differland_dist.config.ExperimentConfig`).
      patch_ids: the patches this shard owns (train and held-out).
      group: patches per compiled call (fixed; padded with empty patches).
    """

    def __init__(self, config, patch_ids: Sequence[int], group: int = 1,
                 storage_options: dict | None = None):
        import jax

        from differland_dist.data.batch import predictor_names
        from differland_dist.data.reader import PatchReader
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
        self.time_test = "time_test" in self.store.array_names
        reader = PatchReader(self.store, names, config.data.products, cache=config.data.cache)
        self.patches: dict[int, PatchArrays] = {}
        from differland_dist.model.structures import Forcing
        from differland_dist.network.standardize import hemisphere_feature

        ids = [int(p) for p in patch_ids]
        try:
            # one read of all owned patches: the reader fetches their chunks concurrently
            b = reader.read(ids)
        finally:
            reader.close()
        lat = Forcing.column(b.forcing, "lat")[:, 0]
        raw = np.concatenate([hemisphere_feature(lat)[:, None], b.predictors], axis=1)
        labels = b.labels
        if self.time_test:
            tt = self.store.array("time_test")
            labels = np.concatenate([labels, np.concatenate(
                [np.asarray(tt[s], np.float32) for s in reader.pixel_slices(ids)])[..., None]], axis=-1)
        start = 0
        for p in ids:  # pixels come back in the order of the patch ids, each patch contiguous
            n = int(np.count_nonzero(b.patch == p))
            sl = slice(start, start + n)
            self.patches[p] = pad_patch(b.forcing[sl], raw[sl], labels[sl], self.size)
            start += n
        self.read_s = time.perf_counter() - t0
        self.devices = jax.devices()
        self._fns: dict = {}
        log.info("shard: %d patches (%d pixels) read in %.1fs; %d device(s) %s", len(self.patches),
                 sum(p.n_pixels for p in self.patches.values()), self.read_s, len(self.devices),
                 self.devices[0].platform)

    # -- statistics for the predictor standardisation -------------------------------------
    def predictor_sums(self, patch_ids: Sequence[int]) -> dict[int, tuple[int, np.ndarray, np.ndarray]]:
        """Per patch: (pixels, sum, sum of squares) of the raw predictors, float64."""
        out = {}
        for p in patch_ids:
            a = self.patches[int(p)]
            x = a.predictors_raw[: a.n_pixels].astype(np.float64)
            out[int(p)] = (a.n_pixels, x.sum(0), (x * x).sum(0))
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
        time_test = self.time_test

        def per_patch(net, pred, forcing, labels, valid, mean, std, test):
            x = (pred - mean) / std
            if time_test:
                # the store marks each step as train (0) or test (1) time: weight labels by it
                tt = labels[..., -1:]
                labels = labels[..., :-1]
                keep = jnp.where(test, tt, 1.0 - tt)
                labels = labels.at[..., 1::2].multiply(keep)
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
        ids = list(patch_ids)
        for i in range(0, len(ids), g):
            chunk = ids[i:i + g]
            arrays = [self.patches[int(p)] for p in chunk]
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
            stack = [jnp.asarray(np.stack([getattr(a, k) for a in arrays])) for k in
                     ("predictors_raw", "forcing", "labels", "valid")]
            out = fn(net, *stack, mean, std, jnp.asarray(test))
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
        T = self.store.n_time
        return int(sum(self.patches[int(p)].n_pixels for p in patch_ids) * T)
