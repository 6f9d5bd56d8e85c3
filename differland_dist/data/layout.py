"""The layout metadata of a pixel store: its root ``zarr.json`` and where each patch lies.

Layout (see docs/data.md and :mod:`differland_dist.data.schema`): one zarr v3 group, pixel-major.
Every array with a ``pixel`` dimension is chunked by ``max_patch_size`` pixels along it (the pixel
axis is sorted by patch) and holds its other dimensions (``time``, ``param``) whole in each chunk,
so pixel chunk ``k`` covers pixels ``[k*C, (k+1)*C)`` with ``C = attrs["max_patch_size"]`` and
patch ``p`` at pixels ``[s, e)`` lives in chunks ``s // C`` to ``(e - 1) // C`` (one or two).
"""

from __future__ import annotations

import json

import numpy as np
import zarr

from differland_dist.data.zarr_objects import ROOT_META, quiet_zarr
from differland_dist.errors import DataValidationError
from differland_dist.storage.location import Location


def _missing(source: str) -> DataValidationError:
    return DataValidationError([f"no zarr v3 group at this URL ({ROOT_META} not found)"],
                               source=source)


def read_root_meta(store: Location) -> dict:
    """The root ``zarr.json`` of the store at ``store``; DataValidationError if it is missing,
    not JSON or not the metadata of a zarr v3 group."""
    try:
        raw = store.join(ROOT_META).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise _missing(store.url) from None
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataValidationError([f"{ROOT_META}: the root metadata is not valid JSON ({e}); "
                                   "the store is damaged: write it again"],
                                  source=store.url) from None
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        got = (f"zarr_format {meta.get('zarr_format')!r}, node_type {meta.get('node_type')!r}"
               if isinstance(meta, dict) else f"a JSON {type(meta).__name__}")
        raise DataValidationError([f"{ROOT_META}: not the metadata of a zarr v3 group ({got}; "
                                   "expected zarr_format 3, node_type 'group')"],
                                  source=store.url)
    return meta


def open_group(zstore: zarr.abc.store.Store, meta: dict, source: str) -> zarr.Group:
    """The zarr group of a store whose root metadata ``meta`` was read (consolidated metadata
    when present: without it zarr reads each array's ``zarr.json``); DataValidationError
    naming ``source`` for a group zarr cannot open."""
    try:
        with quiet_zarr():
            return zarr.open_group(zstore, mode="r", zarr_format=3,
                                   use_consolidated=bool(meta.get("consolidated_metadata")))
    except FileNotFoundError:
        raise _missing(source) from None
    except (ValueError, KeyError, TypeError) as e:  # malformed metadata documents
        raise DataValidationError([f"{ROOT_META}: the group metadata cannot be read "
                                   f"({type(e).__name__}: {e}); the store is damaged: write "
                                   "it again"], source=source) from None


def patch_runs(patch: np.ndarray) -> dict[int, slice]:
    """patch id -> pixel slice, for a pixel axis sorted by patch (each id one contiguous run)."""
    patch = np.asarray(patch)
    if patch.size == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, patch[1:] != patch[:-1]])
    stops = np.r_[starts[1:], patch.size]
    return {int(patch[s]): slice(int(s), int(e)) for s, e in zip(starts, stops)}


def chunks_of(pixels: slice, max_patch_size: int) -> range:
    """Indices of the pixel chunks holding the pixels ``pixels`` of one patch (one or two)."""
    return range(pixels.start // max_patch_size, (pixels.stop - 1) // max_patch_size + 1)
