"""What validation reads: one interface over an opened store and an in-memory Dataset
(names, dims, dtypes, attributes, values read and verified), and the tally of offending
elements a check reports (count, index ranges, value extremes).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from differland_dist.data.codec import DIM_LABEL, span
from differland_dist.errors import CorruptChunkError
from differland_dist.data.io import PixelStore
from differland_dist.data.rows import RowReader

#: Chunks decoded at once when verifying the chunks no check read.
VERIFY_BATCH = 32
#: Problems of one kind listed per variable before summarising.
MAX_LISTED = 10


class Tally:
    """Count, index hull per dimension and value extremes of offending elements."""

    def __init__(self, dims: tuple[str, ...]):
        self.dims = dims
        self.n = 0
        self.lo = [np.iinfo(np.int64).max] * len(dims)
        self.hi = [-1] * len(dims)
        self.vmin = np.inf
        self.vmax = -np.inf

    def add(self, mask: np.ndarray, values: np.ndarray | None, offset: int) -> None:
        """Record ``mask`` (True = offending) of a block whose first axis starts at ``offset``
        (pixel-major blocks; arrays without a pixel axis use offset 0)."""
        n = int(np.count_nonzero(mask))
        if not n:
            return
        self.n += n
        for ax in range(mask.ndim):
            other = tuple(a for a in range(mask.ndim) if a != ax)
            hit = np.flatnonzero(mask.any(axis=other) if other else mask)
            off = offset if ax == 0 else 0
            self.lo[ax] = min(self.lo[ax], int(hit[0]) + off)
            self.hi[ax] = max(self.hi[ax], int(hit[-1]) + off)
        if values is not None:
            v = values[mask]
            v = v[np.isfinite(v)] if np.issubdtype(v.dtype, np.floating) else v
            if v.size:
                self.vmin = min(self.vmin, float(v.min()))
                self.vmax = max(self.vmax, float(v.max()))

    def merge(self, other: "Tally") -> None:
        if not other.n:
            return
        self.n += other.n
        self.lo = [min(a, b) for a, b in zip(self.lo, other.lo)]
        self.hi = [max(a, b) for a, b in zip(self.hi, other.hi)]
        self.vmin, self.vmax = min(self.vmin, other.vmin), max(self.vmax, other.vmax)

    def where(self) -> str:
        return ", ".join(f"{DIM_LABEL.get(d, d)} {span(lo, hi)}"
                         for d, lo, hi in zip(self.dims, self.lo, self.hi))


class DatasetSource:
    """An in-memory Dataset about to be written, as validation reads it."""

    def __init__(self, ds: xr.Dataset):
        self.ds = ds
        self.label = "dataset"
        self.attrs = dict(ds.attrs)
        self.names = tuple(sorted(str(n) for n in ds.variables))
        self.parallel = False

    def dims(self, name: str) -> tuple[str, ...]:
        return tuple(self.ds.variables[name].dims)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.ds.variables[name].shape)

    def dtype(self, name: str) -> np.dtype:
        return self.ds.variables[name].dtype

    def var_attrs(self, name: str) -> dict:
        return dict(self.ds.variables[name].attrs)

    def read(self, name: str, key: tuple = ()) -> np.ndarray:
        var = self.ds.variables[name]
        return np.asarray(var[key].values if key else var.values)

    def read_checked(self, name: str, key: tuple = ()) -> tuple[np.ndarray, None]:
        return self.read(name, key), None


class StoreSource:
    """An opened store, as validation reads it: chunk by chunk, each verified once; chunks
    that do not decode are collected, not raised."""

    def __init__(self, store: PixelStore):
        self.store = store
        self.label = store.url
        self.attrs = dict(store.attrs)
        self.names = store.array_names
        self.parallel = True
        self.rows = RowReader(store)
        #: chunk key -> CorruptChunkError of every chunk found not to decode
        self.corrupt: dict[str, CorruptChunkError] = {}
        #: (array, chunk coords) already read and verified
        self.seen: set[tuple[str, tuple[int, ...]]] = set()

    def dims(self, name: str) -> tuple[str, ...]:
        return self.store.dims(name)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.store.array(name).shape)

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(self.store.array(name).dtype)

    def var_attrs(self, name: str) -> dict:
        return dict(self.store.array(name).attrs)

    def read(self, name: str, key: tuple = ()) -> np.ndarray:
        return self.read_checked(name, key)[0]

    def read_checked(self, name: str, key: tuple = ()) -> tuple[np.ndarray, np.ndarray | None]:
        """Values of ``key`` (``()`` or a pixel slice) read chunk by chunk and verified, and
        None, or a (rows,) bool mask that is False on the rows of chunks that did not decode
        (recorded in :attr:`corrupt`)."""
        rows = key[0] if key else None
        data, errors = self.rows.read_checked(name, rows)
        self.seen.update((name, c) for c in self.store.chunks.grid(name, rows))
        if not errors:
            return data, None
        ok = np.ones(data.shape[0] if data.ndim else 1, bool)
        lo = (rows.start or 0) if rows is not None else 0
        for e in errors:
            self.corrupt[e.key] = e
            b = self.store.chunks.bounds(name, e.coords)
            if b:
                ok[max(0, b[0].start - lo): max(0, b[0].stop - lo)] = False
        return data, ok

    def verify_unread(self, names) -> None:
        """Decode (and verify) every chunk of ``names`` that no check has read yet, a bounded
        batch at a time (decoded chunks are dropped as soon as they are verified)."""
        jobs = [(n, c) for n in names for c in self.store.chunks.grid(n) if (n, c) not in self.seen]
        for i in range(0, len(jobs), VERIFY_BATCH):
            batch = jobs[i:i + VERIFY_BATCH]
            for e in self.rows.chunks(batch).values():
                if isinstance(e, CorruptChunkError):
                    self.corrupt[e.key] = e
            self.seen.update(batch)

    def corrupt_problems(self) -> list[str]:
        by_var: dict[str, list[CorruptChunkError]] = {}
        for e in self.corrupt.values():
            by_var.setdefault(e.var, []).append(e)
        out = []
        for name in sorted(by_var):
            errs = sorted(by_var[name], key=lambda e: [int(x) if x.isdigit() else x
                                                       for x in e.key.split("/")])
            out += [e.problem for e in errs[:MAX_LISTED]]
            if len(errs) > MAX_LISTED:
                out.append(f"{name}: {len(errs) - MAX_LISTED} more corrupt chunk(s)")
        return out
