"""Shorter waits between storage retries, for tests: gcsfs's (1, 2, 4 ... s), s3fs's and
botocore's, and ours, 100 times shorter. The tries stay the real ones; only the clock between them runs faster.

``install()`` patches this process (and returns an undo function); Ray workers run it at
start-up as ``worker_process_setup_hook="quick_backoff.install"`` (tests/ on their path).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

SCALE = 100


def install():
    import aiobotocore.endpoint
    import gcsfs.retry
    import s3fs.core

    from differland_dist.storage import retries

    def sleep(s):
        return asyncio.sleep(s / SCALE)

    quick = SimpleNamespace(sleep=sleep)
    # gcsfs's request retries, s3fs's wrapper, botocore's retries (aiobotocore's endpoint)
    modules = (gcsfs.retry, s3fs.core, aiobotocore.endpoint)
    before = [m.asyncio for m in modules], retries.BEHIND_RETRYING_CLIENT
    for m in modules:
        m.asyncio = SimpleNamespace(**{**{k: getattr(asyncio, k) for k in dir(asyncio)
                                          if not k.startswith("__")}, "sleep": quick.sleep})
    retries.BEHIND_RETRYING_CLIENT = retries.RetryPolicy(
        before[1].attempts, before[1].backoff_s / SCALE, before[1].cap_s, behind_client=True)

    def undo():
        for m, a in zip(modules, before[0]):
            m.asyncio = a
        retries.BEHIND_RETRYING_CLIENT = before[1]

    return undo
