"""Our safe checkpoint format: one ``.npz`` (no pickle) holding named float arrays and a JSON
metadata document, written atomically to a local path or any fsspec URL.

Array names are flat strings (``net_embed_0_weights``, ``opt/0/mu/embed/0/weights`` ...);
metadata is JSON (step, config, data fingerprint, RNG state ...). Loading never unpickles.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import numpy as np

from differland_dist.common import provenance
from differland_dist.errors import CheckpointError
from differland_dist.storage.location import Location

log = logging.getLogger(__name__)

_META_KEY = "__meta_json__"
FORMAT = "differland-checkpoint"
FORMAT_VERSION = 1


def to_bytes(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    # what wrote it (version, commit, config digest) overrides a copied record of older code
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta,
            **provenance.record(meta.get("config"))}
    if _META_KEY in arrays:
        raise CheckpointError(f"array name {_META_KEY!r} is reserved")
    buf = io.BytesIO()
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[_META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    np.savez(buf, **payload)
    return buf.getvalue()


def from_bytes(data: bytes, source: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"{source}: not a readable checkpoint ({e})") from e
    if _META_KEY not in arrays:
        raise CheckpointError(f"{source}: no metadata: not a {FORMAT} file")
    meta = json.loads(arrays.pop(_META_KEY).tobytes().decode())
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{source}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    return arrays, meta


def save(url: str, arrays: dict[str, np.ndarray], meta: dict[str, Any],
         storage_options: dict | None = None) -> None:
    """Write atomically: a reader never sees a partial checkpoint.

    Locally: to a temporary name next to the target, fsync, then ``os.replace``. On object
    stores (gs://, s3://) a single-object upload is atomic (the object appears whole or not
    at all), so the bytes go straight to the final key; a temporary object plus a server-side
    move would only add a copy (and gcsfs's move probes an API emulators lack).
    """
    data = to_bytes(arrays, meta)
    write_bytes_atomic(url, data, storage_options)
    log.debug("wrote checkpoint %s (%d bytes)", url, len(data))


def write_bytes_atomic(url: str, data: bytes, storage_options: dict | None = None) -> None:
    """Atomic write of one object/file (see :func:`save`)."""
    Location(url, storage_options).write_atomic(data)


def load(url: str, storage_options: dict | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        data = Location(url, storage_options).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {url}") from None
    return from_bytes(data, source=url)


def exists(url: str, storage_options: dict | None = None) -> bool:
    return Location(url, storage_options).exists()
