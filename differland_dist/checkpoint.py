"""Our safe checkpoint format: one ``.npz`` (no pickle) holding named float arrays and a JSON
metadata document, written atomically to a local path or any fsspec URL.

Array names are flat strings (``net_embed_0_weights``, ``opt/0/mu/embed/0/weights`` ...);
metadata is JSON (step, config, data fingerprint, RNG state ...). Loading never unpickles.
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from typing import Any

import numpy as np

from differland_dist.errors import CheckpointError

log = logging.getLogger(__name__)

_META_KEY = "__meta_json__"
FORMAT = "differland-checkpoint"
FORMAT_VERSION = 1


def _fs(url: str, storage_options: dict | None):
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path


def to_bytes(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bytes:
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
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
    fs, path = _fs(url, storage_options)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        if parent:
            os.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def load(url: str, storage_options: dict | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    fs, path = _fs(url, storage_options)
    if not fs.exists(path):
        raise CheckpointError(f"checkpoint not found: {url}")
    return from_bytes(fs.cat_file(path), source=url)


def exists(url: str, storage_options: dict | None = None) -> bool:
    fs, path = _fs(url, storage_options)
    return fs.exists(path)
