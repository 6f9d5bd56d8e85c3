"""The computation a worker does for its patches, independent of Ray.

A :class:`Shard` streams the patches it is asked for from the store (the driver never
carries the data) through a bounded cache (:class:`~differland_dist.data.reader.PatchCache`,
``data.cache_bytes``), reading the next step's patches in the background while it computes.
A call packs whole patches one after another into ``rows`` pixels (padding only at the end
of the call, not in every patch: the store's patches are mostly smaller than its largest)
and computes the call's loss terms and gradient with one jit-compiled function of a fixed
shape, the patch-level terms over ``segments`` patch slots. The driver deals the same calls
whatever the number of workers (:mod:`~differland_dist.distributed.policy`), so each call's
result is the same bits on any worker and the driver's call-order sum makes training
independent of the number of workers.

With several local devices (GPUs, TPU chips) a call's pixel axis is sharded across them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from differland_dist.distributed.policy import call_rows, max_segments
from differland_dist.vocabulary.labels import Labels

log = logging.getLogger(__name__)

#: Padded pixels per compiled call and device when ``training.pixels_per_call`` is not set:
#: on CPUs a call's cost grows with its pixels from a few hundred on (no gain in batching
#: more); a GPU or TPU needs ~1e5 pixels in flight to saturate (``differland bench``).
DEFAULT_PIXELS_PER_CALL = {"cpu": 2048, "gpu": 131072, "cuda": 131072, "rocm": 131072,
                           "tpu": 131072}


class CallShape(NamedTuple):
    """The compiled shape of a call, the same on every worker.

    rows: pixels per call (all devices); segments: patch slots of the patch-level terms;
    per_call: patches per call when ``training.patches_per_call`` is set (0: pack by
    pixels); patch_rows: the store's largest patch (parity's padded patch size)."""

    rows: int
    segments: int
    per_call: int
    patch_rows: int


def call_shape(training, sizes: Sequence[int], n_devices: int = 1, platform: str = "cpu",
               per_step: int | None = None) -> CallShape:
    """The call shape for patches of ``sizes`` pixels (the run's training patches).

    ``training.patches_per_call`` set: that many patches a call, ``rows`` = as many times the
    largest patch. Else ``training.pixels_per_call`` (or the platform's default) pixels per
    device, times the devices, at most, patches packed in order until the next one does not
    fit; fewer rows where that fills a step's calls more evenly
    (:func:`~differland_dist.distributed.policy.call_rows`). Never more rows than the largest
    step can fill (``per_step`` patches, default ``training.patches_per_step``), never fewer
    than the largest patch; a whole number of rows per device."""
    n_devices = max(1, int(n_devices))
    sizes = [int(x) for x in sizes] or [1]
    biggest = max(sizes)
    per_step = int(per_step or training.patches_per_step)
    if training.patches_per_call:
        per_call = min(int(training.patches_per_call), per_step)
        rows = per_call * biggest
        segments = per_call
    else:
        per_call = 0
        ppc = training.pixels_per_call or DEFAULT_PIXELS_PER_CALL.get(platform, 2048)
        rows = call_rows(sizes, per_step, int(ppc) * n_devices)
        segments = max_segments(sizes, rows, per_step)
    rows = int(np.ceil(rows / n_devices) * n_devices)
    return CallShape(rows, segments, per_call, biggest)


@dataclass
class PatchArrays:
    """One patch of S pixels (padded by :func:`pad_patch`, else S = ``n_pixels``): raw
    predictors (S, 1+n), forcing (S, T, 17), labels (:class:`Labels` of (S, T) leaves, with
    the store's ``time_test`` if it has one), valid (S,) 1/0."""

    predictors_raw: np.ndarray
    forcing: np.ndarray
    labels: Labels
    valid: np.ndarray
    n_pixels: int

    @property
    def nbytes(self) -> int:
        return int(self.predictors_raw.nbytes + self.forcing.nbytes + self.labels.nbytes
                   + self.valid.nbytes)


@dataclass
class CachedPatch:
    """A patch as a worker's cache keeps it: raw predictors (n, 1+k), the model's forcing
    fields (F, n, T) float32 (``Forcing._fields`` order) and its label leaves stacked
    (L, n, T) float32, in the order of ``jax.tree_util.tree_leaves`` of its :class:`Labels`
    (the shard turns them back into ``Forcing`` and ``Labels`` inside the compiled call).
    Packing a call copies three arrays per patch, not one per label leaf; field- and
    leaf-major, every field the call slices out is contiguous (pixel-major, the compiled call
    took 1.33× as long: strided copies; ``benchmarks/bench_call_layout.py``)."""

    predictors_raw: np.ndarray
    forcing: np.ndarray
    label_stack: np.ndarray
    n_pixels: int

    @property
    def nbytes(self) -> int:
        return int(self.predictors_raw.nbytes + self.forcing.nbytes + self.label_stack.nbytes)


class LabelLayout(NamedTuple):
    """How a :class:`Labels` pytree is stacked into one (L, n, T) array: its tree structure,
    each leaf's dtype, and which leaves are weights (zeroed on padding rows)."""

    treedef: object
    dtypes: tuple
    weights: tuple[int, ...]

    @classmethod
    def of(cls, labels: Labels) -> tuple["LabelLayout", list]:
        """The layout of ``labels`` and its leaves in that order."""
        # imported here: Ray actors import JAX after the runtime environment set JAX_PLATFORMS (see Shard)
        import jax

        paths, treedef = jax.tree_util.tree_flatten_with_path(labels)
        weights = tuple(i for i, (path, _) in enumerate(paths)
                        if getattr(path[0], "name", None) == "weight")
        return cls(treedef, tuple(leaf.dtype for _, leaf in paths), weights), [x for _, x in paths]

    def stack(self, leaves) -> np.ndarray:
        return np.stack([np.asarray(x, np.float32) for x in leaves], axis=0)

    def unstack(self, stack) -> Labels:
        # imported here: Ray actors import JAX after the runtime environment set JAX_PLATFORMS (see Shard)
        import jax

        return jax.tree_util.tree_unflatten(
            self.treedef, [stack[i].astype(dt) for i, dt in enumerate(self.dtypes)])


#: Byte alignment of packed call arrays: JAX's CPU client takes an aligned NumPy array as the
#: device buffer without copying it; an unaligned one it copies (measured 2026-11-30 on the
#: 2-core VM: 18 ms for a 12 MB label stack, against 0.2 ms aligned).
ALIGN = 64


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data start on an :data:`ALIGN`-byte boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(n + ALIGN, np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off:off + n].view(dtype).reshape(shape)


def pad_tail(pred: np.ndarray, forcing: np.ndarray, stack: np.ndarray, n: int,
             layout: LabelLayout) -> np.ndarray:
    """Pad call arrays (predictors (R, k), forcing fields (F, R, T), label stack (L, R, T))
    whose first ``n`` pixels are real: pixels ``n..`` become copies of the first pixel (copies
    of a real pixel keep the padded rollout finite; zeros could divide by zero) with zero
    label weights, in place. Returns valid (R,) 1/0, which removes them from patch means."""
    pred[n:] = pred[0]
    forcing[:, n:], stack[:, n:] = forcing[:, :1], stack[:, :1]
    stack[list(layout.weights), n:] = 0.0
    valid = np.zeros(len(pred), np.float32)
    valid[:n] = 1.0
    return valid


def pad_patch(forcing, predictors_raw, labels: Labels, size: int) -> PatchArrays:
    """One patch padded to ``size`` rows exactly as :meth:`Shard.pack` pads a call
    (:func:`pad_tail`)."""
    n = forcing.shape[0]
    if n > size:
        raise ValueError(f"patch of {n} pixels exceeds max_patch_size {size}")
    layout, leaves = LabelLayout.of(labels)
    real = layout.stack(leaves)
    fields = np.moveaxis(forcing, -1, 0)  # every column, so that the patch keeps all 17
    pred = np.empty((size,) + predictors_raw.shape[1:], predictors_raw.dtype)
    forc = np.empty((fields.shape[0], size) + fields.shape[2:], fields.dtype)
    stack = np.empty((real.shape[0], size) + real.shape[2:], real.dtype)
    pred[:n], forc[:, :n], stack[:, :n] = predictors_raw, fields, real
    valid = pad_tail(pred, forc, stack, n, layout)
    return PatchArrays(pred, np.ascontiguousarray(np.moveaxis(forc, 0, -1)), layout.unstack(stack),
                       valid, n)


def predictor_sums(reader, patch_ids: Sequence[int]) -> dict[int, tuple[int, np.ndarray, np.ndarray]]:
    """Per patch: (pixels, sum, sum of squares) of the raw network inputs (hemisphere feature
    and predictors, :func:`~differland_dist.network.standardize.raw_inputs`), float64, as
    :meth:`Standardizer.from_sums <differland_dist.network.standardize.Standardizer.from_sums>`
    takes them. Reads only the per-pixel variables (not the series) through ``reader``
    (a :class:`~differland_dist.data.reader.PatchReader`), bypassing any patch cache."""
    # imported here: Ray actors import JAX after the runtime environment set JAX_PLATFORMS (see Shard)
    from differland_dist.network.standardize import raw_inputs

    ids = [int(p) for p in patch_ids]
    out = {}
    for i in range(0, len(ids), 256):  # bounded reads, whatever the store's size
        part = ids[i:i + 256]
        patch, lat, pred = reader.read_predictors(part)
        raw = raw_inputs(pred, lat)
        for p in part:
            x = raw[patch == p]
            out[p] = (int(x.shape[0]), x.sum(0), (x * x).sum(0))
    return out


class Shard:
    """A worker's view of the store: streamed, cached patches and the compiled per-patch
    loss/gradient.

    Args:
      config: the experiment config (:class:`differland_dist.config.ExperimentConfig`).
      patch_ids: patches to read now (the rest are read when first asked for).
      shape: the compiled call's shape (:func:`call_shape`; default: from the config and
        every patch of the store, as a run without a driver would choose it).
      cache_bytes: bound on the cached patches (default ``config.data.cache_bytes``).
    """

    def __init__(self, config, patch_ids: Sequence[int] = (), shape: CallShape | None = None,
                 cache_bytes: int | None = None):
        # imported here: Ray actors import JAX after the runtime environment set JAX_PLATFORMS /
        # XLA flags; distributed/worker.py imports this module at its top, so it stays JAX-free
        import jax

        from differland_dist.data.batch import predictor_names
        from differland_dist.data.reader import PatchCache, PatchReader
        from differland_dist.data.store import open_store
        from differland_dist.storage.location import Location

        self.config = config
        t0 = time.perf_counter()
        self.store = open_store(Location(config.data.url, dict(config.data.storage_options)),
                                validate=False)
        self.devices = jax.devices()
        if shape is None:
            shape = call_shape(config.training, [self.patch_pixels(p) for p in self.store.patch_slices],
                               len(self.devices), self.devices[0].platform)
        self.shape = CallShape(*shape)
        self.loss_cfg = config.loss_for_store(self.store.steps_per_year)
        names = predictor_names(config.data.predictors)
        # The patch cache bounds the decoded data a worker holds; the reader's own chunk cache
        # is used only on disk ("memory" would keep every chunk, unbounded).
        chunk_cache = None if config.data.cache == "memory" else config.data.cache
        self.reader = PatchReader(self.store, names, config.data.products, cache=chunk_cache)
        self.cache = PatchCache(self._read, lambda a: a.nbytes,
                                config.data.cache_bytes if cache_bytes is None else cache_bytes)
        self._fns: dict = {}
        self._buffers: dict = {}  # (slot, array) -> reusable aligned call array (see pack)
        self._label_layout: LabelLayout | None = None  # set by the first read
        if len(patch_ids):
            self.cache.get(patch_ids)
        self.read_s = time.perf_counter() - t0
        log.info("shard: %d patches (%d pixels) read in %.1fs; cache %.3g MB; %d device(s) %s",
                 len(self.cache), self.pixels(patch_ids), self.read_s, self.cache.cache_bytes / 1e6,
                 len(self.devices), self.devices[0].platform)

    def patch_pixels(self, patch: int) -> int:
        sl = self.store.patch_slices[int(patch)]
        return int(sl.stop - sl.start)

    def _read(self, ids: list[int]) -> dict[int, CachedPatch]:
        """Patches ``ids`` as the cache keeps them, read from the store in one batch (the
        reader fetches their chunks concurrently)."""
        # imported here: Ray actors import JAX after the runtime environment set JAX_PLATFORMS (see __init__)
        from differland_dist.model.structures import Forcing
        from differland_dist.network.standardize import raw_inputs

        b = self.reader.read(ids)
        raw = raw_inputs(b.predictors, Forcing.column(b.forcing, "lat")[:, 0])
        layout, leaves = LabelLayout.of(b.labels)
        if self._label_layout is None:
            self._label_layout = layout
        elif layout.treedef != self._label_layout.treedef:
            raise ValueError(f"patches {ids} carry other label streams than the first read")
        fields = np.moveaxis(b.forcing[..., :len(Forcing._fields)], -1, 0)  # (F, N, T) view
        out, start = {}, 0
        for p in ids:  # pixels come back in the order of the patch ids, each patch whole
            n = self.patch_pixels(p)
            sl = slice(start, start + n)
            # copies: a cached patch must not keep the whole batch alive
            out[int(p)] = CachedPatch(raw[sl].copy(), np.ascontiguousarray(fields[:, sl], np.float32),
                                      layout.stack([x[sl] for x in leaves]), n)
            start += n
        return out

    @property
    def label_layout(self) -> LabelLayout | None:
        """How the cached patches stack their labels (None before the first read)."""
        return self._label_layout

    def prefetch(self, patch_ids: Sequence[int]) -> None:
        """Start reading patches needed soon (the next step's) in the background."""
        self.cache.prefetch(patch_ids)

    def pixels(self, patch_ids: Sequence[int]) -> int:
        return sum(self.patch_pixels(p) for p in patch_ids)

    # -- statistics for the predictor standardisation -------------------------------------
    def predictor_sums(self, patch_ids: Sequence[int]) -> dict[int, tuple[int, np.ndarray, np.ndarray]]:
        """:func:`predictor_sums` of these patches."""
        return predictor_sums(self.reader, patch_ids)

    # -- the compiled per-call function ---------------------------------------------------
    def compiled(self, with_grad: bool):
        """The compiled call (after a first read: it needs the labels' layout):
        ``f(net, *pack(call), mean, std, test)`` -> ((total, terms), gradient flattened in the
        order of ``ravel_pytree(net)``) or (total, terms)."""
        key = with_grad
        if key in self._fns:
            return self._fns[key]
        # imported here: Ray actors import JAX after the runtime environment set JAX_PLATFORMS (see __init__)
        import jax

        f = self.call_function(with_grad)
        if len(self.devices) > 1:
            from jax.sharding import Mesh, NamedSharding, PartitionSpec as Ps

            mesh = Mesh(np.array(self.devices), ("pixel",))
            split = NamedSharding(mesh, Ps("pixel"))
            split1 = NamedSharding(mesh, Ps(None, "pixel"))  # field- and leaf-major arrays
            rep = NamedSharding(mesh, Ps())
            fn = jax.jit(f, in_shardings=(rep, split, split1, split1, split, split, rep, rep, rep))
        else:
            fn = jax.jit(f)
        self._fns[key] = fn
        return fn

    def call_function(self, with_grad: bool):
        """The pure function :meth:`compiled` jits (after a first read), for callers that
        trace it into a larger program (:mod:`~differland_dist.distributed.multistep`)."""
        # imported here: Ray actors import JAX after the runtime environment set JAX_PLATFORMS (see __init__)
        import jax
        from jax.flatten_util import ravel_pytree

        from differland_dist.loss.objective import network_loss
        from differland_dist.model.structures import Forcing

        cfg, loss_cfg, model_cfg = self.config, self.loss_cfg, self.config.model
        act = cfg.network.activation
        segments, patch_rows = self.shape.segments, self.shape.patch_rows

        layout = self._label_layout

        def per_call(net, pred, forcing, label_stack, patch, valid, mean, std, test):
            x = (pred - mean) / std
            labels = layout.unstack(label_stack)
            # a store split by time (time_test) trains on its train steps, scores the test ones
            labels = labels.time_split(test)
            return network_loss(net, x, Forcing.from_fields(forcing), labels, patch, valid, segments,
                                loss_cfg, model_cfg, act, patch_rows)

        def value_and_flat_grad(*args):
            # flattened inside the program: one output array, not a transfer per leaf
            value, grads = jax.value_and_grad(per_call, has_aux=True)(*args)
            return value, ravel_pytree(grads)[0]

        return value_and_flat_grad if with_grad else per_call

    def pack(self, call: Sequence[int], slot: int | None = None, out: tuple | None = None):
        """The call's patches one after another in ``shape.rows`` = R pixels: raw predictors
        (R, k), forcing fields (F, R, T), stacked label leaves (L, R, T), local patch index
        (R,) and valid (R,); the tail repeats the first
        pixel with valid = 0 and zero weights (a real pixel keeps the padded rollout finite).
        Each patch's rows are copied once, into aligned arrays: new ones, or with ``slot``
        the shard's reusable buffers of that slot (their previous call must have finished:
        the device may read them without a copy), or ``out``: (predictors, forcing, label
        stack) arrays of those shapes to fill."""
        ids = [int(p) for p in call]
        if len(ids) > self.shape.segments:
            raise ValueError(f"a call of {len(ids)} patches, more than its {self.shape.segments} slots")
        arrays = self.cache.get(ids)
        n = sum(a.n_pixels for a in arrays)
        R = self.shape.rows
        if n > R:
            raise ValueError(f"a call of {n} pixels, more than its {R} rows")
        first = arrays[0]
        if out is not None:
            pred, forcing, stack = out
        else:
            pred = self._buffer(slot, 0, (R,) + first.predictors_raw.shape[1:], first.predictors_raw.dtype)
            forcing, stack = (self._buffer(slot, i, x.shape[:1] + (R,) + x.shape[2:], x.dtype)
                              for i, x in ((1, first.forcing), (2, first.label_stack)))
        patch = np.zeros(R, np.int32)
        start = 0
        for i, a in enumerate(arrays):
            sl = slice(start, start + a.n_pixels)
            pred[sl], forcing[:, sl], stack[:, sl] = a.predictors_raw, a.forcing, a.label_stack
            patch[sl] = i
            start += a.n_pixels
        valid = pad_tail(pred, forcing, stack, n, self._label_layout)
        return pred, forcing, stack, patch, valid

    def _buffer(self, slot: int | None, i: int, shape, dtype) -> np.ndarray:
        """Array ``i`` of buffer ``slot``, reused while its shape and dtype stay the same
        (a fresh 20 MB array costs its page faults on every call); None: a new array."""
        if slot is None:
            return aligned_empty(shape, dtype)
        key = (slot, i)
        buf = self._buffers.get(key)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = self._buffers[key] = aligned_empty(shape, dtype)
        return buf

    def compute(self, net, calls: Sequence[Sequence[int]], mean, std, with_grad: bool = True,
                test: bool = False):
        """Per call (in the order given): (its patch ids, terms dict of floats summed over its
        patches, flat gradient or None).

        ``net`` is a NetworkParams pytree; gradients come back flattened in the order of
        ``jax.flatten_util.ravel_pytree(net)``. The next call is packed while the device
        computes the current one (JAX dispatches asynchronously).
        """
        # imported here: Ray actors import JAX after the runtime environment set JAX_PLATFORMS (see __init__)
        import jax
        import jax.numpy as jnp

        mean = jnp.asarray(mean, jnp.float32)
        std = jnp.asarray(std, jnp.float32)
        flag = jnp.asarray(test)

        def launch(i):
            # Two buffer slots: call i + 1 is packed into the slot that call i - 1 used, whose
            # results were read (so it finished) before call i + 1 is launched. device_put
            # takes the aligned arrays without a copy on the CPU.
            arrays = self.pack(calls[i], slot=i % 2)
            fn = self.compiled(with_grad)  # after a read: it compiles for the labels' layout
            return fn(net, *(jax.device_put(x) for x in arrays), mean, std, flag)

        results = []
        pending = launch(0) if len(calls) else None
        for i, call in enumerate(calls):
            out = pending
            pending = launch(i + 1) if i + 1 < len(calls) else None
            out = jax.device_get(out)  # one transfer of every output, not one per term
            if with_grad:
                (total, terms), flat = out
            else:
                (total, terms), flat = out, None
            t = {k: float(v) for k, v in terms.items()}
            t["loss"] = float(total)
            results.append((tuple(int(p) for p in call), t, flat))
        return results

    def pixel_months(self, patch_ids: Sequence[int]) -> int:
        return self.pixels(patch_ids) * int(self.store.n_time)

    def close(self) -> None:
        self.cache.close()
        self.reader.close()
