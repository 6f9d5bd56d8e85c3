"""Writing a validated Dataset as a pixel store: chunking, codecs, the content digest, and the
atomic order (arrays first, ``complete`` last) with the ownership marker before anything.

:func:`differland_dist.data.store.write_store` validates and then calls :func:`write_zarr_store`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.storage import LocalStore

from differland_dist.data.zarr_objects import ROOT_META, quiet_zarr
from differland_dist.storage.location import Location, as_location
from differland_dist.storage.uploads import upload

log = logging.getLogger(__name__)

#: The ownership kind of a pixel store (see :meth:`differland_dist.storage.location.Location.claim`).
STORE_KIND = "zarr-store"


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


def check_target(where: Location | str, *, overwrite: bool = False) -> bool:
    """Whether a store we wrote is at ``where`` and ``overwrite`` allows replacing it (True),
    or nothing is there (False); DifferlandError naming what is in the way otherwise (anything
    not provably written by differland is never replaced)."""
    return as_location(where).check_replaceable(STORE_KIND, overwrite)


def write_zarr_store(ds: xr.Dataset, where: Location | str, *, overwrite: bool = False) -> None:
    """Write a Dataset that has passed validation as a pixel store, atomically: the writing
    half of :func:`differland_dist.data.store.write_store`, which validates first (call that).

    The group is written with ``attrs["complete"] = False``, then every array (chunks of
    ``attrs["max_patch_size"]`` pixels, all chunks written even when empty), then the metadata
    is consolidated and ``complete`` set to True in one final write of ``zarr.json``. An
    interrupted write therefore leaves a store that fails validation.

    Args:
      ds: in-memory (or lazily loadable) Dataset following :mod:`~differland_dist.data.schema`.
      where: destination.
      overwrite: replace an existing store there (only if it is a zarr store we wrote).
    """
    C = int(ds.attrs["max_patch_size"])
    target = as_location(where)
    if check_target(target, overwrite=overwrite):
        log.info("replacing the existing store at %s", target.url)
        target.clear_owned(STORE_KIND)
    target.claim(STORE_KIND, [ROOT_META, *(str(n) for n in ds.variables)])
    out = ds.copy(deep=False)
    out.attrs = {**ds.attrs, "content_sha256": content_digest(ds), "complete": False}
    for var in out.variables.values():
        var.encoding = {}
    log.info("writing %s: %d pixels x %d steps, %d variables, pixel chunks of %d", target.url,
             out.sizes.get("pixel", 0), out.sizes.get("time", 0), len(out.variables), C)
    if target.local:
        _write_zarr(out, LocalStore(target.path), C)
    else:
        _write_and_upload(out, target, C)
    log.info("wrote %s (complete)", target.url)


def _write_and_upload(ds: xr.Dataset, target: Location, max_patch_size: int) -> None:
    """Object stores: write locally, then upload every object concurrently, each verified
    (uploads.py), and the root zarr.json (complete=True) last, only once every other object is
    stored as sent; zarr's own writes would go one request at a time."""
    fs, root = target.fs, target.path
    with tempfile.TemporaryDirectory(prefix="differland-store-") as tmp:
        _write_zarr(ds, LocalStore(tmp), max_patch_size)
        keys = sorted(k for k in Location(tmp).list_objects() if k != ROOT_META)
        log.info("uploading %d objects to %s", len(keys) + 1, target.url)
        t0 = time.perf_counter()
        window = upload(fs, [(os.path.join(tmp, k), f"{root}/{k}") for k in keys], target.url)
        upload(fs, [(os.path.join(tmp, ROOT_META), f"{root}/{ROOT_META}")], target.url)
        log.info("uploaded %d objects in %.2f s (%d at a time)", len(keys) + 1,
                 time.perf_counter() - t0, window)
    fs.invalidate_cache()


def _write_zarr(ds: xr.Dataset, store: zarr.abc.store.Store, max_patch_size: int) -> None:
    """Every array, then consolidated metadata with ``complete`` set, as the last write."""
    with quiet_zarr():
        # "a" into the folder that holds only our marker; "w" would first clear the whole folder (our ownership marker included)
        ds.to_zarr(store, mode="a", zarr_format=3, consolidated=False,
                   encoding=_encoding(ds, max_patch_size), write_empty_chunks=True)
        zarr.consolidate_metadata(store, zarr_format=3)
        group = zarr.open_group(store, mode="r+", zarr_format=3, use_consolidated=True)
        group.attrs["complete"] = True  # rewrites root zarr.json only, consolidated kept
