"""An opened pixel store (:class:`PixelStore`): the layer below validation, composed of the
layout metadata (:mod:`~differland_dist.data.layout`), the splits
(:mod:`~differland_dist.data.splits`) and the chunk codec (:mod:`~differland_dist.data.codec`).

:mod:`differland_dist.data.validate` reads stores through it, and
:mod:`differland_dist.data.store` puts the two together as the validated entry points
``open_store`` and ``write_store`` (and re-exports the public names of these modules).

Stores are reached through a :class:`~differland_dist.storage.location.Location`: a local path,
``file://``, ``memory://``, ``gs://`` (gcsfs) or ``s3://`` (s3fs), with its fsspec options; a
plain URL string opens with no options.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any

import fsspec
import numpy as np
import xarray as xr
import zarr

from differland_dist.data import schema, splits
from differland_dist.data.codec import StoreChunks
from differland_dist.data.layout import chunks_of, open_group, patch_runs, read_root_meta
from differland_dist.data.zarr_objects import quiet_zarr, zarr_store
from differland_dist.errors import DifferlandError
from differland_dist.storage.location import OWNER_MARKER, Location, as_location


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


class PixelStore:
    """An opened pixel store: lazy Dataset, zarr arrays, the patch layout and splits.

    Attributes:
      location: where it is (URL and fsspec options); ``url`` its URL.
      group: the zarr group (consolidated metadata).
      attrs: the group attributes.
      chunks: its chunks (:class:`~differland_dist.data.codec.StoreChunks`: keys, ranges,
        decoding).
    """

    def __init__(self, where: Location | str):
        self.location = as_location(where)
        self.url = self.location.url
        self._zstore = zarr_store(self.location, read_only=True)
        # checked first: zarr's own errors would be a JSONDecodeError
        self.group = open_group(self._zstore, self.root_meta, self.url)
        self.attrs = dict(self.group.attrs)
        self._arrays: dict[str, zarr.Array] = {}
        self.chunks = StoreChunks(self.array, self.url)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self.location.fs

    @property
    def root(self) -> str:
        """The store's root path inside :attr:`fs`."""
        return self.location.path

    # -- metadata --------------------------------------------------------------------------
    @cached_property
    def root_meta(self) -> dict:
        """The root ``zarr.json`` (:func:`~differland_dist.data.layout.read_root_meta`)."""
        return read_root_meta(self.location)

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

    def products(self, stream: str) -> list[str]:
        """Observation products available for a stream (sorted), e.g. ``["lai"]`` for "lai"."""
        if stream not in schema.STREAM_INDEX:
            raise DifferlandError(f"unknown stream {stream!r}; streams: {', '.join(schema.STREAM_NAMES)}")
        return sorted(name[len("obs_"):] for name in self.array_names
                      if name.startswith("obs_") and not name.endswith("_weight")
                      and self.array(name).attrs.get("stream") == stream)

    # -- patches -----------------------------------------------------------------------------
    @cached_property
    def patch(self) -> np.ndarray:
        """(pixel,) int32 patch id of every pixel (small: read once)."""
        return np.asarray(self.array("patch")[:], dtype=np.int32)

    @cached_property
    def patch_slices(self) -> dict[int, slice]:
        """patch id -> slice of its (contiguous) pixels."""
        return patch_runs(self.patch)

    @property
    def patch_ids(self) -> np.ndarray:
        """Sorted unique patch ids."""
        return np.array(sorted(self.patch_slices), dtype=np.int64)

    def patch_chunks(self, patch_id: int) -> range:
        """Indices of the pixel chunks holding a patch (one or two)."""
        return chunks_of(self.patch_slices[int(patch_id)], self.max_patch_size)

    # -- splits (:mod:`differland_dist.data.splits`) ----------------------------------------
    @cached_property
    def split(self) -> np.ndarray:
        """(pixel,) int8: 0 train, 1 dev, 2 test."""
        return np.asarray(self.array("split")[:], dtype=np.int8)

    @cached_property
    def patch_split(self) -> splits.PatchSplit:
        """Sorted patch ids of the train, dev and test splits as written (a store made before
        the three splits reads its held-out patches as dev, with a warning)."""
        return splits.from_store(self.patch_slices, self.split, self.attrs, self.url)

    @property
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

    # -- identity ----------------------------------------------------------------------------
    def list_objects(self) -> dict[str, int]:
        """Every object of the store: relative key -> size (one listing, not cached), less the
        ownership marker (bookkeeping of the writer, not data)."""
        objects = self.location.list_objects()
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
