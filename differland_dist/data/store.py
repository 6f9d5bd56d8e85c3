"""The pixel store's entry points: :func:`open_store` and :func:`write_store`, which validate.

Three layers, each importing only the ones below it (no cycle):

* the zarr store itself: :mod:`~differland_dist.data.zarr_objects` (zarr store objects),
  :mod:`~differland_dist.data.layout` (root metadata, patch layout),
  :mod:`~differland_dist.data.codec` (chunk keys, verification, decoding),
  :mod:`~differland_dist.data.writing` (atomic writes) and
  :mod:`~differland_dist.data.io` (:class:`PixelStore`, which composes them);
* :mod:`differland_dist.data.validate`: pure checks over what a :class:`PixelStore` (or an
  in-memory Dataset) exposes;
* this module: open = :class:`PixelStore` + :func:`~differland_dist.data.validate.check_store`,
  write = :func:`~differland_dist.data.validate.validate_dataset` +
  :func:`~differland_dist.data.writing.write_zarr_store`.

The public names of the first layer are re-exported here, so callers import the store from one
place (``from differland_dist.data.store import PixelStore, open_store``).
"""

from __future__ import annotations

import xarray as xr

from differland_dist.data.codec import DIM_LABEL, CorruptChunkError, FastCodec, decode_raw, fast_codec, span
from differland_dist.data.io import PixelStore, parse_storage_options
from differland_dist.data.layout import patch_runs
from differland_dist.data.validate import check_store, validate_dataset
from differland_dist.data.writing import STORE_KIND, check_target, content_digest, pixel_chunks, write_zarr_store
from differland_dist.data.zarr_objects import ROOT_META, quiet_zarr, resolve, zarr_store
from differland_dist.errors import DataValidationError
from differland_dist.storage.location import Location, as_location
from differland_dist.storage.uploads import UPLOAD_MAX_CONCURRENCY, upload


def write_store(ds: xr.Dataset, where: Location | str, *, overwrite: bool = False) -> None:
    """Write a schema-conforming Dataset as a pixel store, atomically.

    The Dataset is validated first (nothing is written if it fails, DataValidationError lists
    every problem); the group is written with ``attrs["complete"] = False``, then every array
    (chunks of ``attrs["max_patch_size"]`` pixels, all chunks written even when empty), then the
    metadata is consolidated and ``complete`` set to True in one final write of ``zarr.json``
    (:func:`~differland_dist.data.writing.write_zarr_store`). An interrupted write therefore
    leaves a store that fails validation.

    Args:
      ds: in-memory (or lazily loadable) Dataset following :mod:`~differland_dist.data.schema`.
      where: destination (a URL string opens with no fsspec options).
      overwrite: replace an existing store there (only if it is a zarr store we wrote).
    """
    target = as_location(where)
    problems = validate_dataset(ds)
    if problems:
        raise DataValidationError(problems, source=f"dataset to write to {target.url}")
    write_zarr_store(ds, target, overwrite=overwrite)


def open_store(where: Location | str, *, validate: bool = True) -> PixelStore:
    """Open a pixel store.

    Args:
      where: local path, ``file://``, ``memory://``, ``gs://``, ``s3://`` ... (a
        :class:`~differland_dist.storage.location.Location` carries the fsspec options:
        credentials, ``endpoint_url``, ``token`` ...).
      validate: run :func:`differland_dist.data.validate.check_store` (metadata, chunk manifest
        and a full data scan; remembered per fingerprint within the process) and raise
        DataValidationError listing every problem.
    """
    store = PixelStore(where)
    if validate:
        check_store(store)
    return store


__all__ = [
    "DIM_LABEL", "ROOT_META", "STORE_KIND", "UPLOAD_MAX_CONCURRENCY", "CorruptChunkError",
    "FastCodec", "PixelStore", "check_target", "content_digest", "decode_raw", "fast_codec",
    "open_store", "parse_storage_options", "patch_runs", "pixel_chunks", "quiet_zarr", "resolve",
    "span", "upload", "write_store", "zarr_store"]
