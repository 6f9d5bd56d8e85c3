"""glibc heap settings that keep JAX's CPU buffers mapped between calls.

XLA:CPU allocates every output and temporary buffer with ``malloc`` and frees it after the
call. With glibc's defaults, a block of a megabyte or more (a (T, P) series of 276 months x
1024 pixels is 1.1 MB) is served by ``mmap`` and handed back to the kernel on ``free``, so the
next call page-faults it in again; freed heap tops are trimmed and each thread gets its own
arena. On the development VM a page fault costs ~10 us: a third of a 2048-pixel forward
rollout went to the kernel (docs/benchmarks.md). The settings below keep blocks up to 32 MB
on a single heap that is not trimmed, so buffers are reused without faults. The price is that
the process keeps its peak heap mapped.

Only processes we own apply them: the CLI at start-up (before JAX allocates) and Ray workers
through their runtime environment (glibc reads ``MALLOC_*`` variables at process start).
``DIFFERLAND_MALLOC_TUNING=0`` turns this off. Elsewhere than Linux/glibc nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum for mallopt(M_MMAP_THRESHOLD)
TRIM_THRESHOLD = 2**31 - 1   # mallopt takes an int; 2 GiB of free heap top before trimming

# (mallopt option, environment variable read by glibc at start-up, value)
_SETTINGS = ((-3, "MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD),   # M_MMAP_THRESHOLD
             (-1, "MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD))   # M_TRIM_THRESHOLD


def enabled() -> bool:
    return os.environ.get("DIFFERLAND_MALLOC_TUNING", "1").strip().lower() not in ("0", "false", "no", "off")


def env_vars() -> dict[str, str]:
    """The same settings as glibc environment variables, for child processes (Ray workers)."""
    if not enabled() or not sys.platform.startswith("linux"):
        return {}
    return {name: str(value) for _, name, value in _SETTINGS}


def tune() -> bool:
    """Apply the settings to this process with ``mallopt``; True if glibc accepted both.

    Call it before JAX allocates its buffers.
    """
    if not enabled() or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(opt, value) == 1 for opt, _, value in _SETTINGS)
    log.debug("malloc tuning %s", "applied" if ok else "refused by libc")
    return ok
