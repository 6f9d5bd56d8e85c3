"""zarr's store objects under this package's storage rules: :func:`zarr_store` for a location.

:class:`CheckedFsspecStore` is zarr's ``FsspecStore`` with every object write verified and
retried as :mod:`differland_dist.storage.uploads` does it, and every read retried as
:mod:`differland_dist.storage.retries` says and named when it fails, so inference outputs, ensembles
and analyses written through zarr get what stores written by ``write_store`` get.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from typing import Iterator

import fsspec
import zarr
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore, LocalStore

from differland_dist.errors import StorageReadError
from differland_dist.storage.location import Location, as_location
from differland_dist.storage.retries import acall_with_retries, client_options, policy_for
from differland_dist.storage.uploads import put_verified

#: Name of the root metadata object of a zarr v3 group.
ROOT_META = "zarr.json"


@contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's notice that consolidated metadata is not yet in the v3 spec (we use it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3.*")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr.*")
        yield


def resolve(where: Location | str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(synchronous fsspec filesystem, root path inside it) of a store location."""
    loc = as_location(where)
    return loc.fs, loc.path


def zarr_store(where: Location | str, *, read_only: bool = True) -> zarr.abc.store.Store:
    """The zarr store object of a location: :class:`LocalStore` for local paths, else a
    :class:`CheckedFsspecStore` (verified writes, retried reads)."""
    loc = as_location(where)
    if loc.local:
        if not read_only:
            os.makedirs(loc.path, exist_ok=True)
        return LocalStore(loc.path, read_only=read_only)
    return CheckedFsspecStore.from_url(loc.url, storage_options=client_options(loc.url, loc.options),
                                       read_only=read_only)


class CheckedFsspecStore(FsspecStore):
    """``FsspecStore`` whose ``set`` is a verified upload and whose ``get`` follows the retry
    policy (errors name the object)."""

    def _object(self, key: str) -> str:
        return f"{self.path.rstrip('/')}/{key}" if self.path else key

    async def set(self, key: str, value: Buffer, byte_range: tuple[int, int] | None = None) -> None:
        if byte_range:  # zarr writes whole objects; a partial write would skip the check
            raise ValueError(f"{self._object(key)}: partial writes (byte_range) are not supported")
        if not self._is_open:
            await self._open()
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(f"CheckedFsspecStore.set(): expected a Buffer, got {type(value)}")
        await put_verified(self.fs, self._object(key), value.to_bytes())

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        return await acall_with_retries(
            lambda: FsspecStore.get(self, key, prototype, byte_range),
            f"reading {self.fs.unstrip_protocol(self._object(key))}", policy_for(self.fs),
            StorageReadError)
