"""Where things are read and written: one ``Location(url, options)`` type for every store, run
directory, checkpoint and output, local or on object storage (gs://, s3://, memory://, ...).

It owns the few storage rules the rest of the package relies on:

* **atomic writes** — a reader never sees a partial file or object (:meth:`Location.write_atomic`);
* **ownership** — a writer first leaves a marker (:data:`OWNER_MARKER`) naming the top-level
  entries it is about to write, and replacing (``--overwrite``) deletes exactly those entries,
  refusing if anything else is in the way (:meth:`Location.claim`, :meth:`Location.clear_owned`);
* **gcsfs against emulators** — ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is set here, once, before
  any filesystem is made.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable

# Recent gcsfs asks GCS for the bucket type over gRPC, which hangs against storage emulators.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402

from differland_dist.errors import DifferlandError, StorageReadError  # noqa: E402
from differland_dist.storage.extras import missing_backend  # noqa: E402
from differland_dist.storage.retries import call_with_retries, client_options, policy_for, tune_client  # noqa: E402
from differland_dist.storage.uploads import write_verified  # noqa: E402

log = logging.getLogger(__name__)

#: The marker a writer leaves at the root of what it writes (see :meth:`Location.claim`).
OWNER_MARKER = ".differland-owner.json"


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for local paths and URLs alike (no normalisation of ``..``)."""
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts if p)])


def filesystem(url: str, options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(synchronous fsspec filesystem, path inside it) for a URL; a clear error for a bad one.
    The storage client gets this package's defaults (:func:`~differland_dist.storage.retries.client_options`:
    verified uploads, bounded retries) under the caller's ``options``."""
    try:
        fs, path = fsspec.core.url_to_fs(str(url), **client_options(str(url), options))
        tune_client(fs)
    except (ValueError, ImportError, TypeError) as e:
        raise DifferlandError(missing_backend(url) or f"{url!r}: cannot open its filesystem: {e}") from None
    return fs, path.rstrip("/") or path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


@dataclass(frozen=True)
class Location:
    """A file, object or folder by URL plus the fsspec options to reach it.

    ``options`` (credentials, endpoints) stay in memory: :meth:`__repr__` and every message
    name the URL only.
    """

    url: str
    options: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "url", str(self.url).rstrip("/") or str(self.url))
        object.__setattr__(self, "options", dict(self.options or {}))

    # -- the filesystem ----------------------------------------------------------------------
    @cached_property
    def _fs_path(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return filesystem(self.url, self.options)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return self._fs_path[0]

    @property
    def path(self) -> str:
        """The path inside :attr:`fs` (no protocol)."""
        return self._fs_path[1]

    @property
    def local(self) -> bool:
        return is_local(self.fs)

    def __truediv__(self, part: str) -> "Location":
        return self.join(part)

    def join(self, *parts: str) -> "Location":
        return Location(join(self.url, *parts), self.options)

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.url

    # -- reading -----------------------------------------------------------------------------
    def invalidate(self) -> None:
        try:
            self.fs.invalidate_cache(self.path)
        except Exception:  # noqa: BLE001 - a filesystem without a listing cache
            pass

    def _retrying(self, fn, what: str):
        """``fn()`` under the retry policy of :mod:`differland_dist.storage.retries` (a missing object
        is not retried); StorageReadError naming this location when the tries are spent."""
        return call_with_retries(fn, f"{what} {self.url}", policy_for(self.fs), StorageReadError)

    def exists(self) -> bool:
        return bool(self._retrying(lambda: self.fs.exists(self.path), "checking"))

    def read_bytes(self) -> bytes:
        """The whole file; FileNotFoundError if it is not there."""
        return self._retrying(lambda: self.fs.cat_file(self.path), "reading")

    def read_json(self, default: Any = FileNotFoundError) -> Any:
        """A JSON document; ``default`` if missing (else FileNotFoundError); DifferlandError
        naming the file if it is not valid JSON."""
        try:
            data = self.read_bytes()
        except FileNotFoundError:
            if default is FileNotFoundError:
                raise
            return default
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DifferlandError(f"{self.url}: not valid JSON ({e})") from None

    def list_objects(self) -> dict[str, int]:
        """Every file/object below this location: key relative to it -> size in bytes."""
        self.invalidate()
        try:
            found = self._retrying(lambda: self.fs.find(self.path, detail=True), "listing")
        except FileNotFoundError:
            return {}
        out = {}
        prefix = self.path.rstrip("/") + "/"
        for p, info in found.items():
            if info.get("type", "file") != "file":
                continue
            p = p.rstrip("/")
            key = p[len(prefix):] if p.startswith(prefix) else p
            out[key] = int(info.get("size") or 0)
        return out

    def entries(self) -> list[str]:
        """Names of the top-level entries (files and folders) below this location, sorted;
        folders end in "/"."""
        tops: set[str] = set()
        for key in self.list_objects():
            head, sep, _ = key.partition("/")
            tops.add(head + "/" if sep else head)
        return sorted(tops)

    # -- writing -----------------------------------------------------------------------------
    def write_atomic(self, data: bytes) -> None:
        """Write one file/object so that a reader sees the old content or the new, never a part.

        Locally: a temporary name beside the target, fsync, ``os.replace``. On object stores a
        single-object upload is already atomic, so the bytes go to the final key, verified
        against what the server stored (:func:`differland_dist.storage.uploads.write_verified`).
        """
        if self.local:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:8]}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        else:
            write_verified(self.fs, self.path, data)

    def write_json(self, obj: Any) -> None:
        self.write_atomic(json.dumps(obj, indent=1, sort_keys=True).encode())

    def remove(self) -> None:
        """Delete this one file/object if present."""
        try:
            self.fs.rm(self.path)
        except FileNotFoundError:
            pass

    # -- ownership ---------------------------------------------------------------------------
    def claim(self, kind: str, entries: Iterable[str]) -> None:
        """Leave the ownership marker: this location holds a ``kind`` written by differland,
        made of the top-level ``entries`` (names, e.g. ``zarr.json`` and array folders).

        Written before the entries themselves, so an interrupted write is still ours to replace.
        """
        self.join(OWNER_MARKER).write_json({
            "writer": "differland_dist", "kind": kind,
            "entries": sorted({str(e).strip("/") for e in entries})})

    def owner(self) -> dict | None:
        """The ownership marker's content, or None when there is none."""
        try:
            info = self.join(OWNER_MARKER).read_json(default=None)
        except DifferlandError:
            return None
        return info if isinstance(info, dict) and info.get("writer") == "differland_dist" else None

    def check_replaceable(self, kind: str, overwrite: bool, flag: str = "--overwrite") -> bool:
        """Whether something is here that ``overwrite`` lets us replace (True) or nothing is
        here (False). Raises DifferlandError, naming what is in the way, if something is here
        and may not be replaced: ``overwrite`` is off, or it is not provably ours (no marker of
        ``kind``, or entries the marker does not list)."""
        present = self.entries()
        if not present:
            return False
        if not overwrite:
            raise DifferlandError(f"{self.url}: something already exists there "
                                  f"({_names(present)}); pass {flag} to replace what differland "
                                  "wrote there")
        info = self.owner()
        if info is None:
            raise DifferlandError(
                f"{self.url}: refusing to overwrite: not a {kind.replace('-', ' ')} written by "
                f"differland (no {OWNER_MARKER} marker); in the way: {_names(present)}")
        if info.get("kind") != kind:
            raise DifferlandError(f"{self.url}: refusing to overwrite: it holds a "
                                  f"{info.get('kind')!r}, not a {kind!r}")
        owned = set(info.get("entries") or ())
        foreign = [e for e in present if e.rstrip("/") not in owned and e != OWNER_MARKER]
        if foreign:
            raise DifferlandError(f"{self.url}: refusing to overwrite: not written by differland "
                                  f"(not in its {OWNER_MARKER}): {_names(foreign)}")
        return True

    def clear_owned(self, kind: str) -> None:
        """Delete exactly the entries this location's marker lists (and then the marker);
        refuses as :meth:`check_replaceable` does if anything else is here."""
        if not self.check_replaceable(kind, overwrite=True):
            return
        info = self.owner() or {}
        for name in info.get("entries") or ():
            target = self.join(name)
            if target.fs.exists(target.path):
                log.debug("removing %s", target.url)
                target.fs.rm(target.path, recursive=True)
        self.join(OWNER_MARKER).remove()
        self.invalidate()


def _names(entries: list[str], most: int = 8) -> str:
    shown = ", ".join(entries[:most])
    return shown + (f" and {len(entries) - most} more" if len(entries) > most else "")


def as_location(where: "str | os.PathLike | Location", options: dict | None = None) -> Location:
    """``where`` as a :class:`Location`: a Location as it is, a URL or path with ``options``
    (the edge where a caller's URL meets the configured storage options)."""
    return where if isinstance(where, Location) else Location(os.fspath(where), options)


def absolute_url(url: str) -> str:
    """``url`` with a relative local path made absolute: Ray workers run in their cluster's
    working directory, not the driver's, so every URL handed to them is absolute (remote URLs
    and absolute paths are returned as they are)."""
    if not url or "://" in url or os.path.isabs(url):
        return url
    return os.path.abspath(url)
