"""Writes to object storage, each verified when it happens.

Every object uploaded here is checked against the bytes sent before anything counts it as
written: on gs:// the server's response to the upload carries the stored object's MD5, which
gcsfs compares (``consistency="md5"``, set by
:func:`differland_dist.storage.retries.client_options`); elsewhere the stored object's size, and its
MD5 where the server reports one (S3's ``ETag`` of a single-part upload), are read back. A
mismatch is retried like a transient error (:mod:`differland_dist.storage.retries`) and then a
StorageWriteError naming the object, so a store is never marked complete over a chunk that was
stored differently from what was sent (the pinned GCS emulator, for one, drops an uploaded
object's final byte when it is a carriage return).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import random
import re
import time

import fsspec
import fsspec.asyn

from differland_dist.errors import StorageWriteError, StoredBytesMismatch
from differland_dist.storage.retries import acall_with_retries, call_with_retries, policy_for, protocols

log = logging.getLogger(__name__)

#: Most objects :func:`upload` sends at once: enough to hide a cloud store's per-request
#: latency, bounded so that one write never opens hundreds of connections.
UPLOAD_MAX_CONCURRENCY = 32

#: Files larger than this are streamed from disk (``put_file``), not read into memory.
INLINE_MAX = 64 << 20

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


def client_verifies(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether the client compares each upload with the server's response itself (gcsfs with
    ``consistency`` md5 or crc32c), so that no read-back is needed."""
    return "gs" in protocols(fs) and getattr(fs, "consistency", None) in ("md5", "crc32c")


def mismatch(info: dict, size: int, md5: bytes) -> str | None:
    """What differs between a stored object's ``info`` and what was sent (``size`` bytes of
    MD5 digest ``md5``), or None when nothing we can tell does: its size, and its MD5 where the
    server gives one (GCS ``md5Hash``; S3's ETag of a single-part upload)."""
    stored = info.get("size")
    if stored is not None and int(stored) != size:
        return f"stored {int(stored)} bytes, sent {size}"
    if info.get("md5Hash"):
        if base64.b64decode(info["md5Hash"]) != md5:
            return "the stored MD5 is not that of the bytes sent"
    else:
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"').lower()
        if _MD5_ETAG.match(etag) and etag != md5.hex():
            return "the stored ETag (MD5) is not that of the bytes sent"
    return None


def file_md5(path: str) -> tuple[int, bytes]:
    """(size, MD5 digest) of a local file, read in 8 MiB blocks."""
    h, n = hashlib.md5(), 0
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
            n += len(block)
    return n, h.digest()


def _name(fs: fsspec.AbstractFileSystem, path: str) -> str:
    try:
        return fs.unstrip_protocol(path)
    except Exception:  # noqa: BLE001 - only for messages
        return path


async def _put_one(fs: fsspec.AbstractFileSystem, path: str, data: bytes | None,
                   lpath: str | None = None) -> None:
    """One upload, of ``data`` or (streamed) of the local file ``lpath``, and its check
    (StoredBytesMismatch if the stored object differs)."""
    try:
        if lpath is None:
            await fs._pipe_file(path, data)
        else:
            await fs._put_file(lpath, path)
    except Exception as e:  # noqa: BLE001 - only the client's checksum verdict is renamed
        if type(e).__name__ != "ChecksumError":
            raise
        raise StoredBytesMismatch(f"{_name(fs, path)}: the stored MD5 is not that of the bytes "
                                  f"sent ({e})") from e
    if client_verifies(fs):
        return
    fs.invalidate_cache(path)
    size, md5 = (len(data), hashlib.md5(data).digest()) if lpath is None else file_md5(lpath)
    why = mismatch(await fs._info(path), size, md5)
    if why:
        raise StoredBytesMismatch(f"{_name(fs, path)}: {why}")


async def put_verified(fs: fsspec.AbstractFileSystem, path: str, data: bytes | None,
                       rng: random.Random | None = None, lpath: str | None = None) -> None:
    """Upload ``data`` (or the local file ``lpath``, streamed) to ``path`` on an async
    filesystem, verified, retried as the policy says; StorageWriteError naming the object when
    the tries are spent."""
    await acall_with_retries(lambda: _put_one(fs, path, data, lpath),
                             f"writing {_name(fs, path)}", policy_for(fs), StorageWriteError, rng)


def write_verified(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """:func:`put_verified` from synchronous code, for any fsspec filesystem."""
    if getattr(fs, "async_impl", False):
        fsspec.asyn.sync(fs.loop, put_verified, fs, path, data)
        return

    def once():
        fs.pipe_file(path, data)
        fs.invalidate_cache(path)
        why = mismatch(fs.info(path), len(data), hashlib.md5(data).digest())
        if why:
            raise StoredBytesMismatch(f"{_name(fs, path)}: {why}")

    call_with_retries(once, f"writing {_name(fs, path)}", policy_for(fs), StorageWriteError)


def upload(fs: fsspec.AbstractFileSystem, pairs: list[tuple[str, str]], url: str = "",
           max_concurrency: int = UPLOAD_MAX_CONCURRENCY) -> int:
    """Upload local files to object storage, ``(local path, remote path)`` each, every one
    verified (:func:`put_verified`), with a bounded and adapted number of requests in flight;
    returns the concurrency it settled on. StorageWriteError naming the first object that could
    not be written.

    A server with a short listen queue - gcp-storage-emulator's single-threaded server has the
    stock backlog of 5 and closes every connection after one request - drops the connection
    attempts beyond it, and each dropped SYN costs a kernel retransmission of 1, 3, 7, ... s
    (fsspec's batched ``put`` starts every upload at once: 100 objects took 110 s instead of
    0.3 s). Cloud stores, on the other hand, need many requests in flight to hide their
    latency. So the window starts at one request and doubles while the objects per second
    rise by a tenth or more (rounds of 8 x window objects), then the rest goes at the best
    window found, never above ``max_concurrency``.
    """
    if not pairs:
        return 0
    if not getattr(fs, "async_impl", False):  # no batching to bound: one after the other
        for lpath, rpath in pairs:
            with open(lpath, "rb") as f:
                write_verified(fs, rpath, f.read())
        return 1
    window, best, best_rate, probing, i = 1, 1, 0.0, True, 0
    while i < len(pairs):
        batch = pairs[i: i + 8 * window] if probing else pairs[i:]
        i += len(batch)
        t0 = time.perf_counter()
        fsspec.asyn.sync(fs.loop, _put_batch, fs, batch, window)
        rate = len(batch) / max(time.perf_counter() - t0, 1e-6)
        log.debug("upload to %s: %d object(s), %d at a time: %.0f objects/s", url, len(batch),
                  window, rate)
        if not probing:
            break
        if rate >= 1.1 * best_rate:  # more in flight paid off
            best, best_rate = window, rate
        if best == window and window < max_concurrency:
            window = min(2 * window, max_concurrency)
        else:
            probing, window = False, best
    return window


async def _put_batch(fs: fsspec.AbstractFileSystem, batch: list[tuple[str, str]],
                     concurrency: int) -> None:
    """Every object of ``batch``, ``concurrency`` at a time; all have finished (written or
    failed) before the first failure is raised."""
    gate = asyncio.Semaphore(concurrency)

    async def one(lpath: str, rpath: str) -> None:
        async with gate:
            if os.path.getsize(lpath) > INLINE_MAX:  # a large file (an export): streamed
                await put_verified(fs, rpath, None, lpath=lpath)
                return
            with open(lpath, "rb") as f:
                data = f.read()
            await put_verified(fs, rpath, data)

    results = await asyncio.gather(*(one(lp, rp) for lp, rp in batch), return_exceptions=True)
    for (_, rpath), r in zip(batch, results):
        if isinstance(r, StorageWriteError):
            raise r
        if isinstance(r, BaseException):  # not transient: not retried
            raise StorageWriteError(f"writing {_name(fs, rpath)} failed: {type(r).__name__}: "
                                    f"{r}") from r
