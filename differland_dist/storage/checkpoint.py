"""Our safe checkpoint format: one ``.npz`` (no pickle) holding named float arrays and a JSON
metadata document, written atomically to a local path or any fsspec URL.

Array names are flat strings (``net_embed_0_weights``, ``opt/0/mu/embed/0/weights`` ...);
the metadata is one typed :class:`CheckpointRecord` (step, config, data fingerprint, RNG
state ...), written by :func:`write` and read by :func:`read`. Loading never unpickles.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from dataclasses import dataclass, field
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


def save(where: Location, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write atomically: a reader never sees a partial checkpoint.

    Locally: to a temporary name next to the target, fsync, then ``os.replace``. On object
    stores (gs://, s3://) a single-object upload is atomic (the object appears whole or not
    at all), so the bytes go straight to the final key; a temporary object plus a server-side
    move would only add a copy (and gcsfs's move probes an API emulators lack).
    """
    data = to_bytes(arrays, meta)
    where.write_atomic(data)
    log.debug("wrote checkpoint %s (%d bytes)", where.url, len(data))


def load(where: Location) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        data = where.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {where.url}") from None
    return from_bytes(data, source=where.url)


def exists(where: Location) -> bool:
    return where.exists()


@dataclass(frozen=True)
class CheckpointRecord:
    """The metadata of every checkpoint differland writes: a network (``kind="network"``) or a
    training checkpoint (``kind="training"``: the trainer's, an imported network with its
    standardisation, the demo's untrained network). ``None`` fields are not written.

    ``network``: the NetworkConfig fields; ``predictor_names``: the standardised input
    columns (``std_mean``/``std_std``) when the arrays hold them; ``config``: the calibration
    config (credentials removed); ``rng``: how the patch order is drawn; ``best_dev`` /
    ``selected``: the best dev evaluation so far / the one a kept network is (training.keep);
    ``written_by``: what the format adds when writing (format, version, commit, config digest).
    """

    kind: str = "network"
    network: dict = field(default_factory=dict)
    predictor_names: tuple[str, ...] | None = None
    predictor_sets: tuple[str, ...] | None = None
    step: int | None = None
    config: dict | None = None
    data_fingerprint: str | None = None
    lr_scale: float | None = None
    nonfinite_in_a_row: int | None = None
    skipped: tuple[int, ...] | None = None
    reinitialised: int | None = None
    rng: dict | None = None
    time_split: bool | None = None
    best_dev: dict | None = None
    selected: dict | None = None
    imported_from: str | None = None
    standardisation: dict | None = None
    note: str | None = None
    written_by: dict = field(default_factory=dict, compare=False)

    _TUPLES = ("predictor_names", "predictor_sets", "skipped")

    def to_meta(self) -> dict[str, Any]:
        """The JSON metadata document (``None`` fields and ``written_by`` left out)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "written_by" and v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "CheckpointRecord":
        """The record of a metadata document; keys it does not name go to ``written_by``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"written_by"}
        kw = {k: (tuple(v) if k in cls._TUPLES and v is not None else v)
              for k, v in meta.items() if k in names}
        return cls(**kw, written_by={k: v for k, v in meta.items() if k not in names})


def write(where: Location, arrays: dict[str, np.ndarray], record: CheckpointRecord) -> None:
    """Write ``arrays`` with ``record`` as their metadata, atomically (:func:`save`)."""
    save(where, arrays, record.to_meta())


def read(where: Location) -> tuple[dict[str, np.ndarray], CheckpointRecord]:
    """The arrays and :class:`CheckpointRecord` of a checkpoint (CheckpointError naming it if
    it is missing or not ours)."""
    arrays, meta = load(where)
    return arrays, CheckpointRecord.from_meta(meta)
