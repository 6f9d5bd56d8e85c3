"""The zarr v3 pixel store's I/O: open by URL, read and verify chunks, write, fingerprint.

This is the layer below validation: it knows the layout and the bytes, not the schema's checks.
:mod:`differland_dist.data.validate` reads stores through it, and
:mod:`differland_dist.data.store` (which re-exports every public name here) puts the two
together as the validated entry points ``open_store`` and ``write_store``.

Layout (see docs/data.md and :mod:`differland_dist.data.schema`): one zarr v3 group, pixel-major.
Every array with a ``pixel`` dimension is chunked by ``max_patch_size`` pixels along it (the pixel
axis is sorted by patch) and holds its other dimensions (``time``, ``param``) whole in each chunk,
so pixel chunk ``k`` covers pixels ``[k*C, (k+1)*C)`` with ``C = attrs["max_patch_size"]`` and
patch ``p`` at pixels ``[s, e)`` lives in chunks ``s // C`` to ``(e - 1) // C`` (one or two).

URLs: a local path, ``file://``, ``memory://``, ``gs://`` (gcsfs) or ``s3://`` (s3fs); any fsspec
protocol with a registered implementation works. ``storage_options`` go to fsspec unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Iterator, NamedTuple

import fsspec
import numcodecs
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec
from zarr.storage import LocalStore

from differland_dist.data import schema, splits
from differland_dist.data.zarr_objects import CheckedFsspecStore
from differland_dist.errors import CorruptChunkError, DataValidationError, DifferlandError
from differland_dist.storage.location import OWNER_MARKER, Location, filesystem, is_local
from differland_dist.storage.retries import client_options
from differland_dist.storage.uploads import UPLOAD_MAX_CONCURRENCY, upload  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

#: Name of the root metadata object of a zarr v3 group.
ROOT_META = "zarr.json"


@contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's notice that consolidated metadata is not yet in the v3 spec (we use it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3.*")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr.*")
        yield


def parse_storage_options(text: str | None, flag: str = "--storage-options") -> dict[str, Any]:
    """Parse ``--storage-options`` JSON (an object) from the command line; ``None`` -> ``{}``.
    Errors name the flag, never the value (it may hold credentials)."""
    if not text or not text.strip():
        return {}
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as e:
        raise DifferlandError(f"{flag}: not valid JSON ({e})") from None
    if not isinstance(opts, dict):
        raise DifferlandError(f"{flag}: expected a JSON object, got {type(opts).__name__}")
    return opts


def resolve(url: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(synchronous fsspec filesystem, root path inside it) for a store URL."""
    return filesystem(url, storage_options)


def zarr_store(url: str, storage_options: dict | None = None, read_only: bool = True) -> zarr.abc.store.Store:
    """The zarr store object for a URL: :class:`LocalStore` for local paths, else a
    :class:`~differland_dist.data.zarr_objects.CheckedFsspecStore` (verified writes, retried
    reads)."""
    fs, root = resolve(url, storage_options)
    if is_local(fs):
        if not read_only:
            os.makedirs(root, exist_ok=True)
        return LocalStore(root, read_only=read_only)
    return CheckedFsspecStore.from_url(str(url),
                                       storage_options=client_options(url, storage_options),
                                       read_only=read_only)


def pixel_chunks(ds_or_arrays, max_patch_size: int) -> dict[str, tuple[int, ...]]:
    """Chunk shape of each variable: ``max_patch_size`` along ``pixel``, whole along the rest."""
    out = {}
    for name, var in ds_or_arrays.variables.items():
        if var.ndim == 0:
            continue
        out[name] = tuple(min(max_patch_size, n) if d == "pixel" else n
                          for d, n in zip(var.dims, var.shape))
    return out


def _encoding(ds: xr.Dataset, max_patch_size: int) -> dict[str, dict]:
    enc = {}
    for name, chunks in pixel_chunks(ds, max_patch_size).items():
        var = ds[name].variable
        e: dict[str, Any] = {"chunks": tuple(max(1, c) for c in chunks)}
        if np.issubdtype(var.dtype, np.floating):
            e["fill_value"] = np.nan  # a missing chunk reads as gaps, never as plausible zeros
        if var.dtype.kind in "biuf":
            # zarr's default zstd, then a crc32c of the compressed bytes: a flipped byte that
            # still decompresses to plausible values is caught on every read
            e["compressors"] = (ZstdCodec(level=0, checksum=False), Crc32cCodec())
        enc[name] = e
    return enc


def content_digest(ds: xr.Dataset) -> str:
    """sha256 hex of every variable's name, dims, dtype and values (in name order): stored as
    ``attrs["content_sha256"]`` so the fingerprint changes with the data, not only its size."""
    h = hashlib.sha256()
    for name in sorted(str(n) for n in ds.variables):
        var = ds.variables[name]
        values = np.ascontiguousarray(var.values)
        h.update(f"{name}|{','.join(var.dims)}|{values.dtype.str}|{values.shape}\n".encode())
        h.update(repr(values.tolist()).encode() if values.dtype.kind in "OT" else values)
    return h.hexdigest()


def write_zarr_store(ds: xr.Dataset, url: str, storage_options: dict | None = None,
                     overwrite: bool = False) -> None:
    """Write a Dataset that has passed validation as a pixel store, atomically: the writing
    half of :func:`differland_dist.data.store.write_store`, which validates first (call that).

    The group is written with ``attrs["complete"] = False``, then every array (chunks of
    ``attrs["max_patch_size"]`` pixels, all chunks written even when empty), then the metadata
    is consolidated and ``complete`` set to True in one final write of ``zarr.json``. An
    interrupted write therefore leaves a store that fails validation.

    Args:
      ds: in-memory (or lazily loadable) Dataset following :mod:`~differland_dist.data.schema`.
      url: destination; ``storage_options`` are passed to fsspec.
      overwrite: replace an existing store at ``url`` (only if it is a zarr store).
    """
    C = int(ds.attrs["max_patch_size"])
    fs, root = resolve(url, storage_options)
    target = Location(url, storage_options)
    if check_target(url, storage_options, overwrite):
        log.info("replacing the existing store at %s", url)
        target.clear_owned(STORE_KIND)
    target.claim(STORE_KIND, [ROOT_META, *(str(n) for n in ds.variables)])
    out = ds.copy(deep=False)
    out.attrs = {**ds.attrs, "content_sha256": content_digest(ds), "complete": False}
    for var in out.variables.values():
        var.encoding = {}
    log.info("writing %s: %d pixels x %d steps, %d variables, pixel chunks of %d",
             url, out.sizes.get("pixel", 0), out.sizes.get("time", 0), len(out.variables), C)
    if is_local(fs):
        _write_zarr(out, LocalStore(root), C)
    else:
        # Object stores: write locally, then upload every object concurrently, each verified
        # (uploads.py), and the root zarr.json (complete=True) last, only once every other
        # object is stored as sent; zarr's own writes would go one request at a time.
        with tempfile.TemporaryDirectory(prefix="differland-store-") as tmp:
            _write_zarr(out, LocalStore(tmp), C)
            keys = sorted(k for k in Location(tmp).list_objects() if k != ROOT_META)
            log.info("uploading %d objects to %s", len(keys) + 1, url)
            t0 = time.perf_counter()
            window = upload(fs, [(os.path.join(tmp, k), f"{root}/{k}") for k in keys], url)
            upload(fs, [(os.path.join(tmp, ROOT_META), f"{root}/{ROOT_META}")], url)
            log.info("uploaded %d objects in %.2f s (%d at a time)", len(keys) + 1,
                     time.perf_counter() - t0, window)
        fs.invalidate_cache()
    log.info("wrote %s (complete)", url)


def _write_zarr(ds: xr.Dataset, store: zarr.abc.store.Store, max_patch_size: int) -> None:
    """Every array, then consolidated metadata with ``complete`` set, as the last write."""
    with quiet_zarr():
        # "a" into the folder that holds only our marker; "w" would first clear the whole folder (our ownership marker included)
        ds.to_zarr(store, mode="a", zarr_format=3, consolidated=False,
                   encoding=_encoding(ds, max_patch_size), write_empty_chunks=True)
        zarr.consolidate_metadata(store, zarr_format=3)
        group = zarr.open_group(store, mode="r+", zarr_format=3, use_consolidated=True)
        group.attrs["complete"] = True  # rewrites root zarr.json only, consolidated kept


#: The ownership kind of a pixel store (see :meth:`differland_dist.storage.location.Location.claim`).
STORE_KIND = "zarr-store"


def check_target(url: str, storage_options: dict | None = None, overwrite: bool = False) -> bool:
    """Whether a store we wrote is at ``url`` and ``overwrite`` allows replacing it (True), or
    nothing is there (False); DifferlandError naming what is in the way otherwise (anything not
    provably written by differland is never replaced)."""
    return Location(url, storage_options).check_replaceable(STORE_KIND, overwrite)


class PixelStore:
    """An opened pixel store: lazy Dataset, zarr arrays and the patch layout.

    Attributes:
      url, storage_options: as opened.
      fs, root: the fsspec filesystem and the store's root path in it.
      group: the zarr group (consolidated metadata).
      attrs: the group attributes.
    """

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = str(url)
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = resolve(self.url, self.storage_options)
        self._zstore = zarr_store(self.url, self.storage_options, read_only=True)
        meta = self.root_meta  # checked here: zarr's own errors would be a JSONDecodeError
        try:
            with quiet_zarr():
                # without consolidated metadata, zarr reads each array's zarr.json
                self.group = zarr.open_group(self._zstore, mode="r", zarr_format=3,
                                             use_consolidated=bool(meta.get("consolidated_metadata")))
        except FileNotFoundError:
            raise DataValidationError([f"no zarr v3 group at this URL ({ROOT_META} not found)"],
                                      source=self.url) from None
        except (ValueError, KeyError, TypeError) as e:  # malformed metadata documents
            raise DataValidationError([f"{ROOT_META}: the group metadata cannot be read "
                                       f"({type(e).__name__}: {e}); the store is damaged: write "
                                       "it again"], source=self.url) from None
        self.attrs = dict(self.group.attrs)
        self._arrays: dict[str, zarr.Array] = {}

    # -- metadata --------------------------------------------------------------------------
    @cached_property
    def array_names(self) -> tuple[str, ...]:
        """Names of every array in the group (from consolidated metadata when present)."""
        with quiet_zarr():
            return tuple(sorted(name for name, _ in self.group.arrays()))

    def array(self, name: str) -> zarr.Array:
        """The zarr array ``name`` (cached)."""
        if name not in self._arrays:
            with quiet_zarr():
                self._arrays[name] = self.group[name]
        return self._arrays[name]

    def dims(self, name: str) -> tuple[str, ...]:
        return tuple(self.array(name).metadata.dimension_names or ())

    @cached_property
    def ds(self) -> xr.Dataset:
        """The store as a lazy xarray Dataset (no data read until indexed; times not decoded)."""
        with quiet_zarr():
            return xr.open_dataset(self._zstore, engine="zarr", chunks=None, cache=False,
                                   decode_times=False, decode_timedelta=False,
                                   consolidated="consolidated_metadata" in self.root_meta,
                                   zarr_format=3)

    @cached_property
    def root_meta(self) -> dict:
        """The root ``zarr.json``; DataValidationError if it is missing, not JSON or not the
        metadata of a zarr v3 group."""
        try:
            raw = Location(self.url, self.storage_options).join(ROOT_META).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise DataValidationError([f"no zarr v3 group at this URL ({ROOT_META} not found)"],
                                      source=self.url) from None
        try:
            meta = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataValidationError([f"{ROOT_META}: the root metadata is not valid JSON ({e}); "
                                       "the store is damaged: write it again"],
                                      source=self.url) from None
        if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
            got = (f"zarr_format {meta.get('zarr_format')!r}, node_type {meta.get('node_type')!r}"
                   if isinstance(meta, dict) else f"a JSON {type(meta).__name__}")
            raise DataValidationError([f"{ROOT_META}: not the metadata of a zarr v3 group ({got}; "
                                       "expected zarr_format 3, node_type 'group')"],
                                      source=self.url)
        return meta

    @property
    def max_patch_size(self) -> int:
        return int(self.attrs["max_patch_size"])

    @property
    def steps_per_year(self) -> int:
        return int(self.attrs["steps_per_year"])

    @property
    def n_pixels(self) -> int:
        return int(self.array("patch").shape[0])

    @property
    def n_time(self) -> int:
        return int(self.array("time").shape[0])

    # -- patches -----------------------------------------------------------------------------
    @cached_property
    def patch(self) -> np.ndarray:
        """(pixel,) int32 patch id of every pixel (small: read once)."""
        return np.asarray(self.array("patch")[:], dtype=np.int32)

    @cached_property
    def split(self) -> np.ndarray:
        """(pixel,) int8: 0 train, 1 dev, 2 test (:mod:`differland_dist.data.splits`)."""
        return np.asarray(self.array("split")[:], dtype=np.int8)

    @cached_property
    def patch_slices(self) -> dict[int, slice]:
        """patch id -> slice of its (contiguous) pixels."""
        return patch_runs(self.patch)

    @property
    def patch_ids(self) -> np.ndarray:
        """Sorted unique patch ids."""
        return np.array(sorted(self.patch_slices), dtype=np.int64)

    @cached_property
    def patch_split(self) -> splits.PatchSplit:
        """Sorted patch ids of the train, dev and test splits as written (a store made before
        the three splits reads its held-out patches as dev, with a warning)."""
        return splits.from_store(self.patch_slices, self.split, self.attrs, self.url)

    @cached_property
    def train_patches(self) -> np.ndarray:
        return self.patch_split.train

    @property
    def dev_patches(self) -> np.ndarray:
        return self.patch_split.dev

    @property
    def test_patches(self) -> np.ndarray:
        return self.patch_split.test

    @cached_property
    def run_table(self) -> np.ndarray | None:
        """(pixel, run) float32 batch index of every published run (stores imported from the
        paper's driver; None otherwise): ``data.run`` derives its splits from it."""
        if splits.RUN_TABLE_VAR not in self.array_names:
            return None
        return np.asarray(self.array(splits.RUN_TABLE_VAR)[:], dtype=np.float32)

    def run_split(self, run: int) -> splits.PatchSplit:
        """Sorted patch ids of train, dev and test under published run ``run`` (1-based)."""
        return splits.of_published_run(self.patch_slices, self.run_table, run,
                                       float(self.attrs.get("train_fraction", splits.TRAIN_FRACTION)),
                                       self.url)

    def patch_chunks(self, patch_id: int) -> range:
        """Indices of the pixel chunks holding a patch (one or two)."""
        s = self.patch_slices[int(patch_id)]
        C = self.max_patch_size
        return range(s.start // C, (s.stop - 1) // C + 1)

    # -- observations ------------------------------------------------------------------------
    def products(self, stream: str) -> list[str]:
        """Observation products available for a stream (sorted), e.g. ``["lai"]`` for "lai"."""
        if stream not in schema.STREAM_INDEX:
            raise DifferlandError(f"unknown stream {stream!r}; streams: {', '.join(schema.STREAM_NAMES)}")
        out = []
        for name in self.array_names:
            if not name.startswith("obs_") or name.endswith("_weight"):
                continue
            if self.array(name).attrs.get("stream") == stream:
                out.append(name[len("obs_"):])
        return sorted(out)

    # -- chunks ------------------------------------------------------------------------------
    def chunk_codec(self, name: str) -> FastCodec | None:
        """:func:`fast_codec` of array ``name`` (cached)."""
        codecs = self.__dict__.setdefault("_fast_codecs", {})
        if name not in codecs:
            codecs[name] = fast_codec(self.array(name))
        return codecs[name]

    def chunk_key(self, name: str, coords: tuple[int, ...]) -> str:
        """Key of a chunk relative to the store root, e.g. ``t_min/c/1/0``."""
        return f"{name}/{self.array(name).metadata.encode_chunk_key(tuple(coords))}"

    def chunk_bounds(self, name: str, coords: tuple[int, ...]) -> tuple[slice, ...]:
        """The index ranges of array ``name`` that chunk ``coords`` holds."""
        arr = self.array(name)
        return tuple(slice(i * c, min((i + 1) * c, n))
                     for i, c, n in zip(coords, arr.chunks, arr.shape))

    def chunk_where(self, name: str, coords: tuple[int, ...]) -> str:
        """Index ranges of a chunk for messages: ``pixels 8..15, time steps 0..23``."""
        return ", ".join(f"{DIM_LABEL.get(d, d)} {span(b.start, b.stop - 1)}"
                         for d, b in zip(self.dims(name), self.chunk_bounds(name, coords)))

    def chunk_grid(self, name: str, rows: slice | None = None) -> list[tuple[int, ...]]:
        """Coordinates of the chunks holding rows ``rows`` of the first axis (all if None),
        whole along the other axes."""
        arr = self.array(name)
        grid = [-(-n // c) if c else 0 for n, c in zip(arr.shape, arr.chunks)]
        if not grid:
            return [()]
        if rows is not None and arr.shape[0]:
            c0 = arr.chunks[0]
            stop = arr.shape[0] if rows.stop is None else min(arr.shape[0], rows.stop)
            lo, hi = max(0, rows.start or 0), stop
            first = range(lo // c0, (hi - 1) // c0 + 1) if hi > lo else range(0)
        else:
            first = range(grid[0])
        return [(k, *rest) for k in first for rest in np.ndindex(*grid[1:])]

    def corrupt(self, name: str, coords: tuple[int, ...], why: str) -> CorruptChunkError:
        """The CorruptChunkError of chunk ``coords`` of ``name`` (``coords`` kept on it)."""
        err = CorruptChunkError(name, self.chunk_key(name, coords), self.chunk_where(name, coords),
                                why, source=self.url)
        err.coords = tuple(coords)
        return err

    def decode_chunk(self, name: str, coords: tuple[int, ...], raw: bytes) -> np.ndarray:
        """The values of one chunk from its stored bytes, trimmed to the array's extent;
        CorruptChunkError naming the variable, chunk and range if they do not decode."""
        codec = self.chunk_codec(name)
        try:
            data = decode_raw(codec, raw)
        except ValueError as e:
            raise self.corrupt(name, coords, str(e)) from None
        return data[tuple(slice(0, b.stop - b.start) for b in self.chunk_bounds(name, coords))]

    def zarr_chunk(self, name: str, coords: tuple[int, ...]) -> np.ndarray:
        """One chunk through zarr (layouts :func:`fast_codec` does not decode); reads of store
        values go through :class:`differland_dist.data.rows.RowReader`, which calls this."""
        try:
            with quiet_zarr():
                return np.asarray(self.array(name)[self.chunk_bounds(name, coords)])
        except (RuntimeError, ValueError, TypeError) as e:  # zarr's codec errors
            raise self.corrupt(name, coords, f"it cannot be decoded ({type(e).__name__}: {e})") from None

    # -- identity ----------------------------------------------------------------------------
    def list_objects(self) -> dict[str, int]:
        """Every object of the store: relative key -> size (one listing, not cached), less the
        ownership marker (bookkeeping of the writer, not data)."""
        objects = Location(self.url, self.storage_options).list_objects()
        objects.pop(OWNER_MARKER, None)
        return objects

    def fingerprint(self, manifest: dict[str, int] | None = None) -> str:
        """sha256 hex of the root metadata and the manifest (key, size) of every object.

        The root metadata holds every array's metadata (consolidated) and the
        ``content_sha256`` of the values written, so the fingerprint follows the data.
        Cheap: one small read and one listing (or the ``manifest`` of :meth:`list_objects`
        given), no chunk data. Independent of the URL the store is opened by.
        """
        h = hashlib.sha256()
        h.update(json.dumps(self.root_meta, sort_keys=True).encode())
        manifest = self.list_objects() if manifest is None else manifest
        for key, size in sorted(manifest.items()):
            h.update(f"{key}\t{size}\n".encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"PixelStore({self.url!r})"


def patch_runs(patch: np.ndarray) -> dict[int, slice]:
    """patch id -> pixel slice, for a pixel axis sorted by patch (each id one contiguous run)."""
    patch = np.asarray(patch)
    if patch.size == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, patch[1:] != patch[:-1]])
    stops = np.r_[starts[1:], patch.size]
    return {int(patch[s]): slice(int(s), int(e)) for s, e in zip(starts, stops)}


# -- chunks: fetched as raw objects, verified and decoded here ----------------------------------
#: How dimensions are named in messages ("pixels 8..15, time steps 0..23").
DIM_LABEL = {"pixel": "pixels", "time": "time steps"}


def span(lo: int, hi: int) -> str:
    """``"lo"`` or ``"lo..hi"`` (inclusive index range for messages)."""
    return f"{lo}" if lo == hi else f"{lo}..{hi}"





class FastCodec(NamedTuple):
    """How to decode a chunk object without zarr: stored dtype (byte order included), chunk
    shape, a numcodecs decompressor (or None) and whether a crc32c trails the bytes."""

    dtype: np.dtype
    shape: tuple[int, ...]
    decompressor: object | None
    crc32c: bool


def fast_codec(arr: zarr.Array) -> FastCodec | None:
    """The :class:`FastCodec` of an array whose chunks are plain bytes, optionally zstd/gzip/
    blosc-compressed, optionally followed by a crc32c (what write_store makes); None for other
    layouts (sharding, transposes, strings), which are read through zarr."""
    codecs = list(getattr(arr.metadata, "codecs", ()))
    dtype = np.dtype(arr.dtype)
    if not codecs or not isinstance(codecs[0], BytesCodec) or dtype.kind not in "biuf":
        return None
    crc = isinstance(codecs[-1], Crc32cCodec)
    rest = codecs[1:-1] if crc else codecs[1:]
    if len(rest) > 1:
        return None
    decompressor = None
    if rest:
        c = rest[0]
        if isinstance(c, ZstdCodec):
            decompressor = numcodecs.Zstd()
        elif isinstance(c, GzipCodec):
            decompressor = numcodecs.GZip()
        elif isinstance(c, BloscCodec):
            decompressor = numcodecs.Blosc()
        else:
            return None
    endian = getattr(codecs[0].endian, "value", codecs[0].endian)
    if dtype.itemsize > 1 and endian in ("little", "big"):
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    return FastCodec(dtype, tuple(int(c) for c in arr.chunks), decompressor, crc)


def decode_raw(codec: FastCodec, raw: bytes) -> np.ndarray:
    """A whole chunk (``codec.shape``, native byte order) from its stored bytes; ValueError
    saying what is wrong for a checksum mismatch, an undecodable frame or a wrong size."""
    # imported here: only chunk verification needs it (a declared dependency)
    import google_crc32c

    body = np.frombuffer(raw, np.uint8)  # no copy; google_crc32c takes arrays, not memoryviews
    if codec.crc32c:
        if len(body) < 4:
            raise ValueError(f"{len(body)} byte(s), too short to hold its crc32c checksum")
        stored = int.from_bytes(body[-4:].tobytes(), "little")
        body = body[:-4]
        computed = int(google_crc32c.value(body))
        if computed != stored:
            raise ValueError(f"crc32c checksum mismatch (stored {stored:08x}, computed "
                             f"{computed:08x}): its bytes changed after writing")
    if codec.decompressor is not None:
        try:
            body = codec.decompressor.decode(body)
        except Exception as e:  # noqa: BLE001 - numcodecs raises RuntimeError/ValueError/...
            raise ValueError(f"its compressed frame cannot be decoded ({type(e).__name__}: "
                             f"{e})") from None
    expected = int(np.prod(codec.shape)) * codec.dtype.itemsize
    if memoryview(body).nbytes != expected:
        raise ValueError(f"it decodes to {memoryview(body).nbytes} bytes, expected {expected} "
                         f"({'x'.join(map(str, codec.shape))} {codec.dtype.name}): truncated?")
    data = np.frombuffer(body, dtype=codec.dtype).reshape(codec.shape)
    return data if codec.dtype.isnative else data.astype(codec.dtype.newbyteorder("="))
