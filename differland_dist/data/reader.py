"""Streaming the arrays of whole patches from a pixel store to a worker.

:class:`PatchReader` reads, for a list of patch ids, the pixel rows of those patches (a patch
spans one or two chunks of ``max_patch_size`` pixels) through the store's one row reader
(:class:`~differland_dist.data.rows.RowReader`: concurrent chunk fetches, retries with
backoff, verification, an optional chunk cache) and assembles forcing, raw predictors and
labels; :meth:`PatchReader.iter_batches` reads the next batch in a background thread while the
caller computes on the current one. :class:`PatchCache` keeps decoded patches for the coming
steps of a training worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from differland_dist.data import schema, splits
from differland_dist.data.batch import (
    FORCING_PIXEL_VARS, FORCING_VARS, TIME_TEST, PatchBatch, assemble_forcing, assemble_labels,
    assemble_predictors)
from differland_dist.data.rows import RowReader
from differland_dist.data.schema import PER_PIXEL_FORCING, by_pixel_name
from differland_dist.data.store import PixelStore
from differland_dist.errors import ConfigError, DifferlandError

log = logging.getLogger(__name__)

#: Predictor names that are not store variables of their own.
_SPECIAL_PREDICTORS = {"null"}


class PatchReader:
    """Reads whole patches of a store: forcing, raw predictors and labels (with the store's
    ``time_test`` split, if it has one).

    Args:
      store: an opened (validated) :class:`PixelStore`.
      predictors: predictor names in the order wanted (see ``batch.predictor_names``): store
        variables, ``lat``/``lon`` or ``null`` (a column of ones).
      products: stream -> product name, or None to switch the stream off; streams not given
        use their default product. A product the store lacks gives value 0 and weight 0.
      cache: None, ``"memory"`` (decoded chunks kept in this process) or a local directory
        (chunks kept as ``.npy`` under ``<dir>/<store fingerprint>/``).
      max_workers: concurrent chunk reads.
      retries, backoff_s: retries of a failed chunk read and the first wait (doubling); None:
        the policy of :mod:`differland_dist.storage.retries` for the store's filesystem.
    """

    def __init__(self, store: PixelStore, predictors: Sequence[str],
                 products: Mapping[str, str | None] | None = None, cache: str | None = None,
                 max_workers: int = 8, retries: int | None = None,
                 backoff_s: float | None = None):
        self.store = store
        self.predictors = list(predictors)
        names = set(store.array_names)
        unknown = [p for p in self.predictors if p not in names and p not in _SPECIAL_PREDICTORS]
        if unknown:
            raise ConfigError(f"predictor(s) {unknown} not in the store {store.url}")
        bad_streams = [s for s in (products or {}) if s not in schema.STREAM_INDEX]
        if bad_streams:
            raise ConfigError(f"unknown stream(s) {bad_streams} in products; streams: "
                              f"{', '.join(schema.STREAM_NAMES)}")
        self.products: dict[str, str | None] = {
            st.name: (products or {}).get(st.name, st.default_product) for st in schema.STREAMS}
        self._label_vars: list[str] = []
        for stream, prod in self.products.items():
            if prod is None:
                continue
            v, w = schema.obs_value_name(prod), schema.obs_weight_name(prod)
            if v in names and w in names:
                self._label_vars += [v, w]
            elif products and stream in products:
                log.warning("stream %s: product %r is not in %s; its labels are zero-weighted",
                            stream, prod, store.url)
        if TIME_TEST in names:  # the store's time split travels with the labels
            self._label_vars.append(TIME_TEST)
        self._pixel_vars = sorted({*FORCING_PIXEL_VARS,
                                   *(p for p in self.predictors if p not in _SPECIAL_PREDICTORS)})
        self._series_vars = [v for v in FORCING_VARS if store.dims(v)[:1] == ("pixel",)]
        # per-step forcing given per pixel (sites of different years): <name>_by_pixel wins
        self._by_pixel = {v: by_pixel_name(v) for v in PER_PIXEL_FORCING
                          if by_pixel_name(v) in names and v not in self._series_vars}
        self._series_vars += list(self._by_pixel.values())
        step_vars = [v for v in FORCING_VARS if v not in self._series_vars and v not in self._by_pixel]
        self._chunked = sorted({*self._pixel_vars, *self._series_vars, *self._label_vars})
        self.rows = RowReader(store, max_workers=max_workers, retries=retries,
                              backoff_s=backoff_s, cache=cache)
        self._steps = self.rows.read(step_vars)
        #: the row reader's counters: chunks fetched and served from the cache, bytes fetched
        self.stats = self.rows.stats

    def _read_pixels(self, slices: list[slice], variables: Iterable[str]) -> dict[str, np.ndarray]:
        """Rows ``slices`` (concatenated in order) of every variable."""
        return self.rows.read(list(variables), slices)

    # -- public -------------------------------------------------------------------------------
    def pixel_slices(self, patch_ids: Sequence[int]) -> list[slice]:
        """Pixel slices of the patches, in the order given (adjacent ones merged)."""
        slices: list[slice] = []
        for p in patch_ids:
            s = self.store.patch_slices.get(int(p))
            if s is None:
                raise DifferlandError(f"patch {p} is not in {self.store.url} (patches "
                                      f"{int(self.store.patch_ids.min())}..{int(self.store.patch_ids.max())})")
            if slices and slices[-1].stop == s.start:
                slices[-1] = slice(slices[-1].start, s.stop)
            else:
                slices.append(s)
        return slices

    def read(self, patch_ids: Sequence[int]) -> PatchBatch:
        """The batch of the given patches: pixels in the order of ``patch_ids``."""
        slices = self.pixel_slices(patch_ids)
        v = self._read_pixels(slices, self._chunked)
        v.update(self._steps)
        v.update({name: v[by] for name, by in self._by_pixel.items()})
        P = sum(s.stop - s.start for s in slices)
        T = self.store.n_time
        pixel_index = (np.concatenate([np.arange(s.start, s.stop) for s in slices]).astype(np.int64)
                       if slices else np.empty(0, np.int64))
        return PatchBatch(
            pixel_index=pixel_index,
            patch=self.store.patch[pixel_index].astype(np.int32),
            forcing=assemble_forcing(v),
            predictors=assemble_predictors(v, self.predictors, P),
            labels=assemble_labels(v, self.products, P, T),
        )

    def read_predictors(self, patch_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(patch (P,) int32, lat (P,) float32, raw predictors (P, n) float32) of the patches'
        pixels in the order of ``patch_ids``; reads only the per-pixel variables, not the
        series (what the predictor standardisation needs)."""
        slices = self.pixel_slices(patch_ids)
        v = self._read_pixels(slices, self._pixel_vars)
        P = sum(s.stop - s.start for s in slices)
        pixel_index = (np.concatenate([np.arange(s.start, s.stop) for s in slices]).astype(np.int64)
                       if slices else np.empty(0, np.int64))
        return (self.store.patch[pixel_index].astype(np.int32), np.asarray(v["lat"], np.float32),
                assemble_predictors(v, self.predictors, P))

    def iter_batches(self, batches: Iterable[Sequence[int]], prefetch: int = 1) -> Iterator[PatchBatch]:
        """Yield :meth:`read` of each list of patch ids, reading up to ``prefetch`` batches ahead
        in a background thread while the caller works on the current one."""
        it = iter(batches)
        pending: deque[Future] = deque()
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patch-prefetch")
        try:
            while True:
                while len(pending) < max(0, int(prefetch)) + 1:
                    ids = next(it, None)
                    if ids is None:
                        break
                    pending.append(ahead.submit(self.read, list(ids)))
                if not pending:
                    return
                batch = pending.popleft().result()
                yield batch
        finally:
            for f in pending:
                f.cancel()
            ahead.shutdown(wait=True, cancel_futures=True)

    def read_predictors_all(self, split: str | int | None = None) -> np.ndarray:
        """(N, n) float32 raw predictors of every pixel, or of the train (0) / dev (1) / test
        (2) split. Reads only the small per-pixel predictor variables (and ``split``)."""
        if split is not None:
            split = {name: code for code, name in enumerate(splits.NAMES)}.get(split, split)
            if split not in (splits.TRAIN, splits.DEV, splits.TEST):
                raise ConfigError(f"split must be None, 'train', 'dev' or 'test', got {split!r}")
        n = self.store.n_pixels
        v = self.rows.read([p for p in self.predictors if p not in _SPECIAL_PREDICTORS])
        out = assemble_predictors(v, self.predictors, n)
        return out if split is None else out[self.store.split == split]

    def close(self) -> None:
        self.rows.close()

    def __enter__(self) -> "PatchReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PatchCache:
    """Decoded patches kept for the coming steps: a least-recently-used cache bounded in bytes,
    filled on demand and by :meth:`prefetch` in a background thread.

    A training worker streams its patches through this: :meth:`get` returns the patches of a
    call (loading the missing ones with ``load``), :meth:`prefetch` starts loading the next
    step's while the caller computes. At most ``cache_bytes`` of items stay resident (the
    least recently used are evicted first); the items a :meth:`get` returns are the caller's
    until it drops them, so a call larger than the cache still runs.

    Args:
      load: patch ids -> {id: item}; called from the caller's thread or the prefetch thread.
      nbytes: the resident size of an item in bytes.
      cache_bytes: the bound on resident items (0: keep nothing between calls).
    """

    def __init__(self, load: Callable[[list[int]], dict[int, object]],
                 nbytes: Callable[[object], int], cache_bytes: int):
        self._load = load
        self._nbytes = nbytes
        self.cache_bytes = max(0, int(cache_bytes))
        self._items: OrderedDict[int, object] = OrderedDict()
        self._sizes: dict[int, int] = {}
        self._lock = threading.Lock()
        self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patch-prefetch")
        self._pending: dict[int, Future] = {}
        #: loads (patches read from the store), hits, evictions, resident and peak bytes,
        #: patches loaded by prefetch, and seconds the caller waited for loads.
        self.stats = {"loaded": 0, "hits": 0, "evicted": 0, "bytes": 0, "peak_bytes": 0,
                      "prefetched": 0, "wait_s": 0.0}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, pid: int) -> bool:
        return int(pid) in self._items

    def _insert(self, items: Mapping[int, object]) -> None:
        with self._lock:
            for p, item in items.items():
                if p in self._items:
                    continue
                n = int(self._nbytes(item))
                self._items[p], self._sizes[p] = item, n
                self.stats["bytes"] += n
            self.stats["peak_bytes"] = max(self.stats["peak_bytes"], self.stats["bytes"])
            while self.stats["bytes"] > self.cache_bytes and self._items:
                p, _ = self._items.popitem(last=False)
                self.stats["bytes"] -= self._sizes.pop(p)
                self.stats["evicted"] += 1

    def _load_into(self, ids: list[int], prefetched: bool) -> dict[int, object]:
        got = self._load(ids)
        with self._lock:
            self.stats["loaded"] += len(got)
            if prefetched:
                self.stats["prefetched"] += len(got)
        self._insert(got)
        return got

    def get(self, patch_ids: Sequence[int]) -> list[object]:
        """The items of ``patch_ids`` in that order (waiting for a prefetch that holds some)."""
        ids = [int(p) for p in patch_ids]
        t0 = time.perf_counter()
        for p in ids:
            f = self._pending.get(p)
            if f is not None:
                f.result()  # its error, if any, is raised here
        found: dict[int, object] = {}
        with self._lock:
            for p in ids:
                if p in self._items:
                    self._items.move_to_end(p)
                    found[p] = self._items[p]
            self.stats["hits"] += len(found)
        missing = list(dict.fromkeys(p for p in ids if p not in found))
        if missing:
            found.update(self._load_into(missing, False))
        self.stats["wait_s"] += time.perf_counter() - t0
        return [found[p] for p in ids]

    def prefetch(self, patch_ids: Sequence[int]) -> None:
        """Start loading those of ``patch_ids`` that are neither resident nor being loaded,
        in the background; :meth:`get` waits for them."""
        self._pending = {p: f for p, f in self._pending.items() if not f.done()}
        with self._lock:
            todo = [int(p) for p in dict.fromkeys(patch_ids)
                    if int(p) not in self._items and int(p) not in self._pending]
        if not todo or self.cache_bytes == 0:
            return
        f = self._ahead.submit(self._load_into, todo, True)
        for p in todo:
            self._pending[p] = f

    def close(self) -> None:
        self._ahead.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._items.clear()
            self._sizes.clear()
            self.stats["bytes"] = 0
