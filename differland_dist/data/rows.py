"""The one reader of pixel rows: every read of store values goes through :class:`RowReader`.

A read names variables and rows of the pixel axis; only the chunks those rows touch are
fetched, as raw objects, concurrently (batched ``cat_ranges`` on object stores, a thread pool
otherwise; at most :func:`~differland_dist.storage.throttle.storage_slots` requests in flight per
process), retried as the one policy of :mod:`differland_dist.storage.retries` says, verified (crc32c,
size) and decoded here; an optional cache keeps decoded chunks in memory or as ``.npy`` files.
The trainer's :class:`~differland_dist.data.reader.PatchReader`, inference's chunk worker,
evaluation's blocks and validation's scan all read through it, so retries, verification and
the error that names a bad chunk are the same everywhere.

Two ways to meet a chunk that does not decode: :meth:`RowReader.read` raises one
DataValidationError listing every such chunk (what computing code wants), and
:meth:`RowReader.read_checked` returns the values with those chunks left as fill plus their
errors (what validation, which reports every problem of a store, wants).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import fsspec.asyn
import numpy as np

from differland_dist.data.io import PixelStore
from differland_dist.errors import CorruptChunkError, DataValidationError, StorageReadError
from differland_dist.storage.retries import (ALONE, RetryPolicy, call_with_retries, is_transient,
                                     policy_for)
from differland_dist.storage.throttle import storage_slots

log = logging.getLogger(__name__)
R = TypeVar("R")

#: A chunk: (variable, chunk coordinates).
ChunkKey = tuple[str, tuple[int, ...]]
Rows = slice | Sequence[slice] | None

def with_retries(fn: Callable[[], R], what: str, retries: int | None = None,
                 backoff_s: float | None = None, rng: random.Random | None = None,
                 fs=None) -> R:
    """``fn()`` (a read of ``what``) under the retry policy of :mod:`differland_dist.storage.retries`
    for filesystem ``fs`` (None: one with no retrying client); ``retries``/``backoff_s``
    override its tries (``retries + 1`` in all) and first wait. StorageReadError naming
    ``what`` once they are spent."""
    policy = _policy(fs, retries, backoff_s)
    return call_with_retries(fn, f"reading {what}", policy, StorageReadError, rng)


def _policy(fs, retries: int | None, backoff_s: float | None) -> RetryPolicy:
    base = ALONE if fs is None else policy_for(fs)
    return RetryPolicy(base.attempts if retries is None else int(retries) + 1,
                       base.backoff_s if backoff_s is None else float(backoff_s),
                       base.cap_s, base.behind_client)


def as_slices(rows: Rows, n: int) -> list[slice]:
    """``rows`` (None: all ``n``; a slice; or slices, concatenated in order) as bounded slices."""
    if rows is None:
        return [slice(0, n)]
    if isinstance(rows, slice):
        rows = [rows]
    out = []
    for s in rows:
        lo = max(0, s.start or 0)
        hi = n if s.stop is None else min(n, s.stop)
        out.append(slice(lo, max(lo, hi)))
    return out


class RowReader:
    """Reads rows of the pixel axis of a store's variables (see the module docstring).

    Args:
      store: an opened :class:`PixelStore`.
      max_workers: concurrent chunk fetches and decodes (fetches also bounded per process by
        :func:`differland_dist.storage.throttle.storage_slots`).
      retries, backoff_s: None (the policy of :func:`differland_dist.storage.retries.policy_for` for
        the store's filesystem), or retries of a failed fetch and the first wait (doubling).
      cache: None, ``"memory"`` (decoded chunks kept in this reader) or a local directory
        (chunks kept as ``.npy`` under ``<dir>/<store fingerprint>/``, shared by readers and
        processes; written atomically).
    """

    def __init__(self, store: PixelStore, max_workers: int = 8, retries: int | None = None,
                 backoff_s: float | None = None, cache: str | None = None):
        self.store = store
        self.max_workers = max(1, int(max_workers))
        self.policy = _policy(store.fs, retries, backoff_s)
        self._rng = random.Random(0)
        self._cache_kind = None if cache is None else ("memory" if cache == "memory" else "disk")
        self._mem: dict[ChunkKey, np.ndarray] = {}
        self._disk_dir = None
        if self._cache_kind == "disk":
            self._disk_dir = os.path.join(str(cache), store.fingerprint())
            os.makedirs(self._disk_dir, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="row-read")
        self._lock = threading.Lock()
        #: chunks fetched from the store and served from the cache; decoded and stored
        #: (compressed) bytes fetched.
        self.stats = {"chunks_fetched": 0, "cache_hits": 0, "bytes_fetched": 0,
                      "stored_bytes_fetched": 0}

    # -- public ----------------------------------------------------------------------------------
    def has_pixel_axis(self, name: str) -> bool:
        return self.store.dims(name)[:1] == ("pixel",)

    def read(self, names: Sequence[str], rows: Rows = None) -> dict[str, np.ndarray]:
        """Rows ``rows`` of each variable (None: all; slices are concatenated in order);
        variables without a leading pixel axis are read whole. One DataValidationError lists
        every chunk that is missing or does not decode; StorageReadError after the retries."""
        values, errors = self._read(names, rows)
        if errors:
            raise DataValidationError([e.problem for e in errors], source=self.store.url)
        return values

    def read_checked(self, name: str, rows: slice | None = None,
                     ) -> tuple[np.ndarray, list[CorruptChunkError]]:
        """Rows of one variable and the errors of its chunks that did not decode (their values
        left as fill: NaN for floats, 0 otherwise)."""
        values, errors = self._read([name], rows)
        return values[name], errors

    def chunks(self, keys: Sequence[ChunkKey]) -> dict[ChunkKey, np.ndarray | CorruptChunkError]:
        """Decoded chunks (trimmed to the array's extent) or the CorruptChunkError of each one
        that does not decode: from the cache, else fetched concurrently. A missing chunk
        (zarr would read fill values) is a DataValidationError."""
        out: dict[ChunkKey, np.ndarray | CorruptChunkError] = {}
        todo = []
        for key in dict.fromkeys(keys):
            hit = self._from_cache(key)
            if hit is None:
                todo.append(key)
            else:
                out[key] = hit
        fast = [k for k in todo if self.store.chunks.codec(k[0]) is not None]
        slow = [k for k in todo if self.store.chunks.codec(k[0]) is None]
        raw = self._fetch_raw(fast) if fast else {}
        got = dict(zip(fast, self._pool.map(lambda k: self._decode(k, raw[k]), fast)))
        got.update(zip(slow, self._pool.map(self._through_zarr, slow)))
        good = {k: v for k, v in got.items() if not isinstance(v, CorruptChunkError)}
        for key, data in good.items():
            self._to_cache(key, data)
        with self._lock:
            self.stats["cache_hits"] += len(out)
            self.stats["chunks_fetched"] += len(good)
            self.stats["bytes_fetched"] += sum(d.nbytes for d in good.values())
            self.stats["stored_bytes_fetched"] += sum(len(b) for b in raw.values())
        out.update(got)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "RowReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- assembling rows ---------------------------------------------------------------------
    def _read(self, names: Sequence[str], rows: Rows,
              ) -> tuple[dict[str, np.ndarray], list[CorruptChunkError]]:
        plan: dict[str, list[slice] | None] = {}
        keys: list[ChunkKey] = []
        for name in dict.fromkeys(names):
            shape = self.store.array(name).shape
            if not shape or not self.has_pixel_axis(name):
                plan[name] = None
                keys += [(name, c) for c in self.store.chunks.grid(name)]
                continue
            plan[name] = as_slices(rows, shape[0])
            keys += [(name, c) for s in plan[name] for c in self.store.chunks.grid(name, s)]
        got = self.chunks(keys)
        errors = list(dict.fromkeys(e for e in got.values() if isinstance(e, CorruptChunkError)))
        return {name: self._assemble(name, slices, got) for name, slices in plan.items()}, errors

    def _assemble(self, name: str, slices: list[slice] | None, got: dict) -> np.ndarray:
        arr = self.store.array(name)
        shape, dtype = tuple(arr.shape), np.dtype(arr.dtype)
        if not shape:
            v = got[(name, ())]
            return np.full((), np.nan if dtype.kind == "f" else 0, dtype) \
                if isinstance(v, CorruptChunkError) else np.asarray(v)
        if slices is None:
            slices = [slice(0, shape[0])]
        total = sum(s.stop - s.start for s in slices)
        out = np.full((total, *shape[1:]), np.nan if dtype.kind == "f" else 0, dtype)
        at = 0
        for s in slices:
            for c in self.store.chunks.grid(name, s):
                data = got[(name, c)]
                if isinstance(data, CorruptChunkError):
                    continue
                b = self.store.chunks.bounds(name, c)
                a0, a1 = max(b[0].start, s.start), min(b[0].stop, s.stop)
                out[(slice(at + a0 - s.start, at + a1 - s.start), *b[1:])] = \
                    data[a0 - b[0].start: a1 - b[0].start]
            at += s.stop - s.start
        return out

    # -- fetching chunks ---------------------------------------------------------------------
    def _what(self, key: ChunkKey) -> str:
        name, coords = key
        if coords and self.has_pixel_axis(name):
            b = self.store.chunks.bounds(name, coords)[0]
            return f"{name} pixels {b.start}..{b.stop - 1} of {self.store.url}"
        return f"{name} chunk {self.store.chunks.key(name, coords)} of {self.store.url}"

    def _path(self, key: ChunkKey) -> str:
        return f"{self.store.root}/{self.store.chunks.key(*key)}"

    def _cat(self, paths: list[str]) -> list[bytes | Exception]:
        """Bytes of each object (or the exception reading it), ``max_workers`` at a time."""
        fs = self.store.fs
        if getattr(fs, "async_impl", False):
            return fsspec.asyn.sync(fs.loop, self._cat_async, fs, paths)
        n = max(1, min(self.max_workers, len(paths)))
        groups = [paths[i::n] for i in range(n)]
        parts = list(self._pool.map(lambda g: fs.cat_ranges(g, None, None, on_error="return"),
                                    groups))
        out: list = [None] * len(paths)
        for i, part in enumerate(parts):
            out[i::n] = part
        return out

    async def _cat_async(self, fs, paths: list[str]) -> list[bytes | BaseException]:
        """Each request holds one of this reader's ``max_workers`` places and then one slot of
        the process's pool (:func:`~differland_dist.storage.throttle.storage_slots`)."""
        mine, pool = asyncio.Semaphore(self.max_workers), storage_slots()

        async def one(path: str) -> bytes:
            async with mine, pool.hold():
                return await fs._cat_file(path)

        return await asyncio.gather(*(one(p) for p in paths), return_exceptions=True)

    def _fetch_raw(self, keys: list[ChunkKey]) -> dict[ChunkKey, bytes]:
        """Stored bytes of chunk objects; the chunks whose read failed transiently (after the
        storage client's own retries) are read again as :attr:`policy` says."""
        out: dict[ChunkKey, bytes] = {}
        pending = list(keys)
        attempts = self.policy.attempts
        for attempt in range(1, attempts + 1):
            results = self._cat([self._path(k) for k in pending])
            failed = []
            for key, r in zip(pending, results):
                if not isinstance(r, BaseException):
                    out[key] = r
                elif isinstance(r, FileNotFoundError):
                    raise DataValidationError(
                        [f"{key[0]}: chunk {self.store.chunks.key(*key)} is missing from the "
                         f"store ({self.store.chunks.where(*key)}); zarr would read it as fill "
                         "values"], source=self.store.url)
                elif not is_transient(r):
                    raise r
                else:
                    failed.append((key, r))
            if not failed:
                return out
            key, err = failed[0]
            if attempt == attempts:
                behind = " (each after the storage client's own retries)" \
                    if self.policy.behind_client else ""
                raise StorageReadError(f"reading {self._what(key)} failed after {attempts} "
                                       f"attempt(s){behind} ({len(failed)} chunk(s) failing): "
                                       f"{type(err).__name__}: {err}") from err
            wait = self.policy.wait_s(attempt, self._rng)
            log.warning("reading %d chunk(s) of %s: %s: %s; retry %d/%d in %.2f s", len(failed),
                        self.store.url, type(err).__name__, err, attempt, attempts - 1, wait)
            time.sleep(wait)
            pending = [k for k, _ in failed]
        raise AssertionError("unreachable")

    def _decode(self, key: ChunkKey, raw: bytes) -> np.ndarray | CorruptChunkError:
        try:
            return self.store.chunks.decode(key[0], key[1], raw)
        except CorruptChunkError as e:
            return e

    def _through_zarr(self, key: ChunkKey) -> np.ndarray | CorruptChunkError:
        """A chunk through zarr (layouts whose codecs the fast path does not decode)."""
        try:
            return call_with_retries(lambda: self.store.chunks.via_zarr(*key),
                                     f"reading {self._what(key)}", self.policy, StorageReadError,
                                     self._rng)
        except CorruptChunkError as e:
            return e

    # -- the cache -----------------------------------------------------------------------------
    def _cache_path(self, key: ChunkKey) -> str:
        return os.path.join(self._disk_dir, key[0], ".".join(map(str, key[1])) + ".npy")

    def _from_cache(self, key: ChunkKey) -> np.ndarray | None:
        if self._cache_kind == "memory":
            return self._mem.get(key)
        if self._cache_kind == "disk":
            path = self._cache_path(key)
            if os.path.exists(path):
                return np.load(path, allow_pickle=False)
        return None

    def _to_cache(self, key: ChunkKey, data: np.ndarray) -> None:
        if self._cache_kind == "memory":
            self._mem[key] = data
        elif self._cache_kind == "disk":
            path = self._cache_path(key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.save(f, data, allow_pickle=False)
            os.replace(tmp, path)  # atomic: readers never see half a file
