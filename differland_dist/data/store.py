"""The pixel store's entry points: :func:`open_store` and :func:`write_store`, which validate.

Three layers, each importing only the ones below it (no cycle):

* :mod:`differland_dist.data.io`: the zarr store itself (URLs, :class:`PixelStore`, chunk
  decoding and verification, atomic writes, fingerprints);
* :mod:`differland_dist.data.validate`: pure checks over what a :class:`PixelStore` (or an
  in-memory Dataset) exposes;
* this module: open = :class:`PixelStore` + :func:`~differland_dist.data.validate.check_store`,
  write = :func:`~differland_dist.data.validate.validate_dataset` +
  :func:`~differland_dist.data.io.write_zarr_store`.

Every public name of :mod:`~differland_dist.data.io` is re-exported here, so callers import the
store from one place (``from differland_dist.data.store import PixelStore, open_store``).
"""

from __future__ import annotations

import xarray as xr

from differland_dist.data.io import (
    DIM_LABEL, ROOT_META, STORE_KIND, UPLOAD_MAX_CONCURRENCY, CorruptChunkError, FastCodec,
    PixelStore, check_target, content_digest, decode_raw, fast_codec, parse_storage_options,
    patch_runs, pixel_chunks, quiet_zarr, resolve, span, upload, write_zarr_store, zarr_store)
from differland_dist.data.validate import check_store, validate_dataset
from differland_dist.errors import DataValidationError


def write_store(ds: xr.Dataset, url: str, storage_options: dict | None = None,
                overwrite: bool = False) -> None:
    """Write a schema-conforming Dataset as a pixel store, atomically.

    The Dataset is validated first (nothing is written if it fails, DataValidationError lists
    every problem); the group is written with ``attrs["complete"] = False``, then every array
    (chunks of ``attrs["max_patch_size"]`` pixels, all chunks written even when empty), then the
    metadata is consolidated and ``complete`` set to True in one final write of ``zarr.json``
    (:func:`~differland_dist.data.io.write_zarr_store`). An interrupted write therefore leaves
    a store that fails validation.

    Args:
      ds: in-memory (or lazily loadable) Dataset following :mod:`~differland_dist.data.schema`.
      url: destination; ``storage_options`` are passed to fsspec.
      overwrite: replace an existing store at ``url`` (only if it is a zarr store).
    """
    problems = validate_dataset(ds)
    if problems:
        raise DataValidationError(problems, source=f"dataset to write to {url}")
    write_zarr_store(ds, url, storage_options, overwrite)


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
        check_store(store)
    return store


__all__ = [
    "DIM_LABEL", "ROOT_META", "STORE_KIND", "UPLOAD_MAX_CONCURRENCY", "CorruptChunkError",
    "FastCodec", "PixelStore", "check_target", "content_digest", "decode_raw", "fast_codec",
    "open_store", "parse_storage_options", "patch_runs", "pixel_chunks", "quiet_zarr", "resolve",
    "span", "upload", "write_store", "zarr_store"]
