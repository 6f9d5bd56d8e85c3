"""The one retry policy of storage access: which layer retries what, how often, how long.

Two layers, and no third (docs/data.md, "Retries", has the table):

1. **The storage client, per HTTP request.** gcsfs retries every request that fails with
   408/429/5xx, a dropped connection or a body cut short: :data:`CLIENT_ATTEMPTS` ``["gs"]``
   = 6 tries, waiting ``2**(n-1) + U(0, 1)`` s (capped at 32 s) before try ``n``. s3fs hands
   HTTP errors to botocore (we set its ``standard`` mode, :data:`CLIENT_ATTEMPTS` ``["s3"]``
   tries, jittered exponential waits); s3fs's own retry loop is cut to one try
   (:func:`tune_client`), so botocore is the only request-level retrier there. Local and
   in-memory filesystems have no such layer.
2. **Ours, per operation** (one chunk object read, one object uploaded): an operation whose
   error is still transient after the client's tries, or that the client never retries (an
   uploaded object whose stored checksum is not that of the bytes sent), is tried again with
   jittered exponential backoff, :func:`policy_for` ``(fs).attempts`` times in all. The chunk
   reader (:mod:`differland_dist.data.rows`), the uploader (:mod:`differland_dist.storage.uploads`),
   zarr's object store (:mod:`differland_dist.data.zarr_objects`) and
   :class:`differland_dist.storage.location.Location`'s reads, listings and writes use this one loop
   (:func:`call_with_retries`); nothing else retries.

So a fault that does not go away costs at most ``CLIENT_ATTEMPTS x attempts`` requests per
object (6 x 3 = 18 on gs:// and s3://, 1 x 5 = 5 on a local or mounted filesystem) and then an error
naming the object; tests/test_storage_faults.py counts them through a proxy.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

import fsspec

from differland_dist.errors import DifferlandError

log = logging.getLogger(__name__)
R = TypeVar("R")

#: Tries the storage client itself makes per HTTP request, by fsspec protocol (gcsfs: its
#: fixed ``retries = 6``; s3: botocore's ``total_max_attempts`` (its ``max_attempts`` would
#: count retries, one more request), set by :func:`client_options`).
CLIENT_ATTEMPTS = {"gs": 6, "gcs": 6, "s3": 6, "s3a": 6}


@dataclass(frozen=True)
class RetryPolicy:
    """Our layer's tries of one operation (``attempts`` in all) and its waits: before try
    ``n + 1``, ``backoff_s * 2**(n-1)`` times a uniform 0.5-1.5 jitter, at most ``cap_s``."""

    attempts: int
    backoff_s: float
    cap_s: float = 30.0
    #: whether the storage client below already retried each request (for messages)
    behind_client: bool = False

    def wait_s(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed try ``attempt`` (1-based)."""
        return min(self.cap_s, self.backoff_s * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.5)


#: Our layer where the client already retried each request (a few slow tries: an outage of
#: tens of seconds), and where nothing below retries (more, quicker tries).
BEHIND_RETRYING_CLIENT = RetryPolicy(attempts=3, backoff_s=2.0, behind_client=True)
ALONE = RetryPolicy(attempts=5, backoff_s=0.2)


def protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    return fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)


def client_attempts(fs: fsspec.AbstractFileSystem) -> int:
    """Tries the filesystem's own client makes per request (1: it does not retry)."""
    return max((CLIENT_ATTEMPTS.get(p, 1) for p in protocols(fs)), default=1)


def policy_for(fs: fsspec.AbstractFileSystem) -> RetryPolicy:
    """Our layer's :class:`RetryPolicy` for operations on ``fs``."""
    return BEHIND_RETRYING_CLIENT if client_attempts(fs) > 1 else ALONE


def tune_client(fs: fsspec.AbstractFileSystem) -> fsspec.AbstractFileSystem:
    """Make botocore the one request-level retrier of an s3fs filesystem: s3fs wraps every
    call in a retry loop of its own (``retries``, 5 by default) around botocore's, which
    would multiply the tries of a dropped connection; with one s3fs try per call the layers
    are botocore's (:data:`CLIENT_ATTEMPTS`) and ours. A body cut short, which s3fs retried,
    is then retried by our per-operation loop. Other filesystems are returned unchanged."""
    if type(fs).__name__ == "S3FileSystem" and getattr(fs, "retries", 1) != 1:
        fs.retries = 1  # per instance: fsspec caches one per set of options, all ours
    return fs


def client_options(url: str, options: dict | None) -> dict:
    """``options`` with this package's defaults for the storage client of ``url`` filled in
    (what the caller set wins): gcsfs compares each upload's stored MD5 (the server's response)
    with the bytes sent (``consistency="md5"``); botocore retries in ``standard`` mode, a
    bounded :data:`CLIENT_ATTEMPTS` times."""
    out = dict(options or {})
    scheme = str(url).split("://", 1)[0] if "://" in str(url) else ""
    if scheme in ("gs", "gcs"):
        out.setdefault("consistency", "md5")
    elif scheme in ("s3", "s3a"):
        config = dict(out.get("config_kwargs") or {})
        config.setdefault("retries", {"mode": "standard", "total_max_attempts": CLIENT_ATTEMPTS["s3"]})
        out["config_kwargs"] = config
    return out


# -- classifying errors -------------------------------------------------------------------------
#: Errors that say the object is not there or not readable: retrying will not help.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
              FileExistsError)


def is_transient(err: BaseException) -> bool:
    """Whether a storage error is worth another try: timeouts, connection and I/O errors, HTTP
    408/429/5xx from cloud clients, and stored bytes that differ from those sent; not missing
    objects or denied access."""
    if isinstance(err, _PERMANENT):
        return False
    if isinstance(err, DifferlandError):
        return False
    if isinstance(err, (TimeoutError, ConnectionError, OSError)):
        return True
    code = getattr(err, "code", None) or getattr(err, "status", None)
    if isinstance(code, int):
        return code in (408, 429) or 500 <= code < 600
    if type(err).__name__ == "ChecksumError":  # gcsfs: stored MD5 is not that of the upload
        return True
    return type(err).__module__.split(".")[0] in ("aiohttp", "botocore", "aiobotocore",
                                                  "urllib3", "requests", "gcsfs", "s3fs")


def _wait_or_fail(e: Exception, attempt: int, what: str, policy: RetryPolicy,
                  fail: Callable[[str], Exception], rng: random.Random) -> float:
    """The wait before the next try after ``e`` on try ``attempt``; raises ``e`` itself when it
    is not transient and ``fail(message)`` when the tries are spent."""
    if not is_transient(e):
        raise e
    if attempt == policy.attempts:
        behind = " (each after the storage client's own retries)" if policy.behind_client else ""
        raise fail(f"{what} failed after {policy.attempts} attempt(s){behind}: "
                   f"{type(e).__name__}: {e}") from e
    wait = policy.wait_s(attempt, rng)
    log.warning("%s: %s: %s; retry %d/%d in %.2f s", what, type(e).__name__, e,
                attempt, policy.attempts - 1, wait)
    return wait


def call_with_retries(fn: Callable[[], R], what: str, policy: RetryPolicy,
                      fail: Callable[[str], Exception], rng: random.Random | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> R:
    """``fn()``, tried again on a transient error as ``policy`` says; after the last try
    ``fail(message)`` is raised (from the last error), the message naming ``what``."""
    rng = rng or random.Random()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified by _wait_or_fail
            wait = _wait_or_fail(e, attempt, what, policy, fail, rng)
        sleep(wait)
    raise AssertionError("unreachable")


async def acall_with_retries(fn: Callable[[], Awaitable[R]], what: str, policy: RetryPolicy,
                             fail: Callable[[str], Exception],
                             rng: random.Random | None = None) -> R:
    """:func:`call_with_retries` for coroutines (waits with ``asyncio.sleep``)."""
    rng = rng or random.Random()
    for attempt in range(1, policy.attempts + 1):
        try:
            return await fn()
        except Exception as e:  # noqa: BLE001 - classified by _wait_or_fail
            wait = _wait_or_fail(e, attempt, what, policy, fail, rng)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")
