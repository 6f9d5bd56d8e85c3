"""zarr's object-store adapter under this package's storage rules.

:class:`CheckedFsspecStore` is zarr's ``FsspecStore`` with every object write verified and
retried as :mod:`differland_dist.storage.uploads` does it, and every read retried as
:mod:`differland_dist.storage.retries` says and named when it fails, so inference outputs, ensembles
and analyses written through zarr get what stores written by ``write_store`` get.
"""

from __future__ import annotations

from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore

from differland_dist.errors import StorageReadError
from differland_dist.storage.retries import acall_with_retries, policy_for
from differland_dist.storage.uploads import put_verified


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
