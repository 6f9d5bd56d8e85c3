"""Shorter waits between storage retries, for tests: gcsfs's (1, 2, 4 ... s) and ours, 100
times shorter. The tries stay the real ones; only the clock between them runs faster.

``install()`` patches this process (and returns an undo function); Ray workers run it at
start-up as ``worker_process_setup_hook="quick_backoff.install"`` (tests/ on their path).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

SCALE = 100


def install():
    import gcsfs.retry

    from differland_dist import retries

    def sleep(s):
        return asyncio.sleep(s / SCALE)

    before = gcsfs.retry.asyncio, retries.BEHIND_RETRYING_CLIENT
    gcsfs.retry.asyncio = SimpleNamespace(sleep=sleep)
    retries.BEHIND_RETRYING_CLIENT = retries.RetryPolicy(
        before[1].attempts, before[1].backoff_s / SCALE, before[1].cap_s, behind_client=True)

    def undo():
        gcsfs.retry.asyncio, retries.BEHIND_RETRYING_CLIENT = before

    return undo
