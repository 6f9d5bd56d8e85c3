"""The zarr v3 pixel store: open by URL, write atomically, fingerprint, locate patches.

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
import warnings
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Iterator

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
import zarr  # noqa: E402
from zarr.storage import FsspecStore, LocalStore  # noqa: E402

from differland_dist.data import schema  # noqa: E402
from differland_dist.errors import DataValidationError, DifferlandError  # noqa: E402
from differland_dist.location import OWNER_MARKER, Location  # noqa: E402

log = logging.getLogger(__name__)

#: Name of the root metadata object of a zarr v3 group.
ROOT_META = "zarr.json"


@contextmanager
def _quiet_zarr() -> Iterator[None]:
    """Silence zarr's notice that consolidated metadata is not yet in the v3 spec (we use it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3.*")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr.*")
        yield


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """Parse ``--storage-options`` JSON (an object) from the command line; ``None`` -> ``{}``."""
    if not text:
        return {}
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as e:
        raise DifferlandError(f"--storage-options: not valid JSON ({e}): {text!r}") from None
    if not isinstance(opts, dict):
        raise DifferlandError(f"--storage-options: expected a JSON object, got {type(opts).__name__}")
    return opts


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def resolve(url: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(synchronous fsspec filesystem, root path inside it) for a store URL."""
    try:
        fs, root = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    except (ValueError, ImportError, TypeError) as e:
        raise DifferlandError(f"store URL {url!r}: cannot open its filesystem: {e}") from None
    return fs, root.rstrip("/")


def zarr_store(url: str, storage_options: dict | None = None, read_only: bool = True) -> zarr.abc.store.Store:
    """The zarr store object for a URL: :class:`LocalStore` for local paths, else FsspecStore."""
    fs, root = resolve(url, storage_options)
    if _is_local(fs):
        if not read_only:
            os.makedirs(root, exist_ok=True)
        return LocalStore(root, read_only=read_only)
    return FsspecStore.from_url(str(url), storage_options=dict(storage_options or {}),
                                read_only=read_only)


def list_objects(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, int]:
    """Every object under ``root``: key relative to root -> size in bytes (one listing)."""
    try:
        fs.invalidate_cache(root)
    except Exception:  # noqa: BLE001 - a filesystem without a listing cache
        pass
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    prefix = root + "/"
    for path, info in found.items():
        if info.get("type", "file") != "file":
            continue
        path = path.rstrip("/")
        key = path[len(prefix):] if path.startswith(prefix) else path
        out[key] = int(info.get("size") or 0)
    return out


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


def write_store(ds: xr.Dataset, url: str, storage_options: dict | None = None,
                overwrite: bool = False) -> None:
    """Write a schema-conforming Dataset as a pixel store, atomically.

    The Dataset is validated first (nothing is written if it fails, DataValidationError lists
    every problem); the group is written with ``attrs["complete"] = False``, then every array
    (chunks of ``attrs["max_patch_size"]`` pixels, all chunks written even when empty), then the
    metadata is consolidated and ``complete`` set to True in one final write of ``zarr.json``.
    An interrupted write therefore leaves a store that fails validation.

    Args:
      ds: in-memory (or lazily loadable) Dataset following :mod:`~differland_dist.data.schema`.
      url: destination; ``storage_options`` are passed to fsspec.
      overwrite: replace an existing store at ``url`` (only if it is a zarr store).
    """
    from differland_dist.data.validate import validate_dataset

    problems = validate_dataset(ds)
    if problems:
        raise DataValidationError(problems, source=f"dataset to write to {url}")
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
    if _is_local(fs):
        _write_zarr(out, LocalStore(root), C)
    else:
        # Object stores: write locally, then upload every object concurrently and the root
        # zarr.json (complete=True) last; zarr's own writes would go one request at a time.
        with tempfile.TemporaryDirectory(prefix="differland-store-") as tmp:
            _write_zarr(out, LocalStore(tmp), C)
            keys = sorted(k for k in list_objects(fsspec.filesystem("file"), tmp) if k != ROOT_META)
            log.info("uploading %d objects to %s", len(keys) + 1, url)
            fs.put([os.path.join(tmp, k) for k in keys], [f"{root}/{k}" for k in keys])
            fs.put_file(os.path.join(tmp, ROOT_META), f"{root}/{ROOT_META}")
        fs.invalidate_cache()
    log.info("wrote %s (complete)", url)


def _write_zarr(ds: xr.Dataset, store: zarr.abc.store.Store, max_patch_size: int) -> None:
    """Every array, then consolidated metadata with ``complete`` set, as the last write."""
    with _quiet_zarr():
        # "a" into the folder that holds only our marker; "w" would first clear the whole folder (our ownership marker included)
        ds.to_zarr(store, mode="a", zarr_format=3, consolidated=False,
                   encoding=_encoding(ds, max_patch_size), write_empty_chunks=True)
        zarr.consolidate_metadata(store, zarr_format=3)
        group = zarr.open_group(store, mode="r+", zarr_format=3, use_consolidated=True)
        group.attrs["complete"] = True  # rewrites root zarr.json only, consolidated kept


#: The ownership kind of a pixel store (see :meth:`differland_dist.location.Location.claim`).
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
        try:
            with _quiet_zarr():
                try:
                    self.group = zarr.open_group(self._zstore, mode="r", zarr_format=3,
                                                 use_consolidated=True)
                except ValueError:  # no consolidated metadata: read each array's zarr.json
                    self.group = zarr.open_group(self._zstore, mode="r", zarr_format=3,
                                                 use_consolidated=False)
        except FileNotFoundError:
            raise DataValidationError([f"no zarr v3 group at this URL ({ROOT_META} not found)"],
                                      source=self.url) from None
        self.attrs = dict(self.group.attrs)
        self._arrays: dict[str, zarr.Array] = {}

    # -- metadata --------------------------------------------------------------------------
    @cached_property
    def array_names(self) -> tuple[str, ...]:
        """Names of every array in the group (from consolidated metadata when present)."""
        with _quiet_zarr():
            return tuple(sorted(name for name, _ in self.group.arrays()))

    def array(self, name: str) -> zarr.Array:
        """The zarr array ``name`` (cached)."""
        if name not in self._arrays:
            with _quiet_zarr():
                self._arrays[name] = self.group[name]
        return self._arrays[name]

    def dims(self, name: str) -> tuple[str, ...]:
        return tuple(self.array(name).metadata.dimension_names or ())

    @cached_property
    def ds(self) -> xr.Dataset:
        """The store as a lazy xarray Dataset (no data read until indexed; times not decoded)."""
        with _quiet_zarr():
            return xr.open_dataset(self._zstore, engine="zarr", chunks=None, cache=False,
                                   decode_times=False, decode_timedelta=False,
                                   consolidated="consolidated_metadata" in self._root_meta,
                                   zarr_format=3)

    @cached_property
    def _root_meta(self) -> dict:
        return json.loads(self.fs.cat_file(f"{self.root}/{ROOT_META}"))

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
        """(pixel,) int8: 0 train, 1 test."""
        return np.asarray(self.array("split")[:], dtype=np.int8)

    @cached_property
    def patch_slices(self) -> dict[int, slice]:
        """patch id -> slice of its (contiguous) pixels."""
        return patch_runs(self.patch)

    @property
    def patch_ids(self) -> np.ndarray:
        """Sorted unique patch ids."""
        return np.array(sorted(self.patch_slices), dtype=np.int64)

    def _patches_of_split(self, value: int) -> np.ndarray:
        return np.array([p for p, s in self.patch_slices.items() if self.split[s.start] == value],
                        dtype=np.int64)

    @cached_property
    def train_patches(self) -> np.ndarray:
        return self._patches_of_split(0)

    @cached_property
    def test_patches(self) -> np.ndarray:
        return self._patches_of_split(1)

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

    # -- identity ----------------------------------------------------------------------------
    def list_objects(self) -> dict[str, int]:
        """Every object of the store: relative key -> size (one listing, not cached), less the
        ownership marker (bookkeeping of the writer, not data)."""
        objects = list_objects(self.fs, self.root)
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
        h.update(json.dumps(self._root_meta, sort_keys=True).encode())
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


def open_store(url: str, storage_options: dict | None = None, validate: bool = True) -> PixelStore:
    """Open a pixel store by URL.

    Args:
      url: local path, ``file://``, ``memory://``, ``gs://``, ``s3://`` ...
      storage_options: passed to fsspec (credentials, ``endpoint_url``, ``token`` ...).
      validate: run :func:`differland_dist.data.validate.check_store` (metadata, chunk manifest
        and a full data scan; remembered per fingerprint within the process) and raise
        DataValidationError listing every problem.
    """
    store = PixelStore(url, storage_options)
    if validate:
        from differland_dist.data.validate import check_store

        check_store(store)
    return store
