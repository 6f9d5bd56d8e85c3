"""A process-wide bound on object-storage reads in flight.

Every :class:`~differland_dist.data.rows.RowReader` of a process (a calibration worker's patch
reader and its prefetch, an inference actor's chunk reads, validation's scan) takes a slot of
one pool of :data:`DEFAULT_SLOTS` for each chunk request, so that N readers in one process keep
at most that many requests in flight to the bucket, not N times their own window. Slots are
taken per request, first come first served, so a reader that arrives late waits a request's
time, not another reader's whole batch. With the storage client's jittered exponential backoff
on 429/503 (see :mod:`differland_dist.storage.retries`), many workers reading one bucket slow down
together instead of hammering it. ``DIFFERLAND_MAX_STORAGE_REQUESTS`` (an integer >= 1)
changes the size.

The pool lives on fsspec's event loop, where every async filesystem's requests run.
"""

from __future__ import annotations

import asyncio
import os
import threading
from contextlib import asynccontextmanager
from typing import AsyncIterator

from differland_dist.errors import DifferlandError

#: Slots of the process-wide pool unless ``DIFFERLAND_MAX_STORAGE_REQUESTS`` says otherwise.
DEFAULT_SLOTS = 32
ENV = "DIFFERLAND_MAX_STORAGE_REQUESTS"


class Slots:
    """``size`` requests in flight at most (per event loop; fsspec has one)."""

    def __init__(self, size: int):
        self.size = int(size)
        self._sems: dict[int, asyncio.Semaphore] = {}
        self.in_flight = 0
        #: the most requests ever in flight at once (for tests and benchmarks)
        self.peak = 0

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """One slot, for one request (await it on the loop that runs the request)."""
        loop = id(asyncio.get_running_loop())
        sem = self._sems.get(loop)
        if sem is None:
            sem = self._sems[loop] = asyncio.Semaphore(self.size)
        async with sem:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1


_lock = threading.Lock()
_slots: Slots | None = None


def slots_from_env() -> int:
    text = os.environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_SLOTS
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise DifferlandError(f"{ENV}={text!r}: expected an integer >= 1 (concurrent storage "
                              "reads per process)")
    return n


def storage_slots() -> Slots:
    """The process's pool (made on first use, sized from the environment)."""
    global _slots
    with _lock:
        if _slots is None:
            _slots = Slots(slots_from_env())
        return _slots


def reset_storage_slots(size: int | None = None) -> Slots:
    """A fresh pool of ``size`` slots (default: from the environment); for tests and
    benchmarks that measure one setting after another."""
    global _slots
    with _lock:
        _slots = Slots(slots_from_env() if size is None else size)
        return _slots
