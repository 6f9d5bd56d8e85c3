"""A process-wide bound on object-storage reads in flight.

Every :class:`~differland_dist.data.rows.RowReader` of a process (a calibration worker's patch
reader and its prefetch, an inference actor's chunk reads, validation's scan) draws its
concurrent chunk requests from one pool of :data:`DEFAULT_SLOTS` slots, so that N readers in one
process open at most that many connections to the bucket, not N times their own window. With
the storage client's jittered exponential backoff on 429/503 (see
:mod:`differland_dist.retries`), many workers reading one bucket slow down together instead of
hammering it. ``DIFFERLAND_MAX_STORAGE_REQUESTS`` (an integer >= 1) changes the size.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

from differland_dist.errors import DifferlandError

#: Slots of the process-wide pool unless ``DIFFERLAND_MAX_STORAGE_REQUESTS`` says otherwise.
DEFAULT_SLOTS = 32
ENV = "DIFFERLAND_MAX_STORAGE_REQUESTS"


class Slots:
    """``size`` slots; :meth:`hold` takes between 1 and ``want`` of them (as many as are free,
    waiting while none is) and gives them back on exit."""

    def __init__(self, size: int):
        self.size = int(size)
        self._free = self.size
        self._cond = threading.Condition()
        #: the most slots ever held at once (for tests and benchmarks)
        self.peak = 0

    @contextmanager
    def hold(self, want: int) -> Iterator[int]:
        with self._cond:
            while self._free == 0:
                self._cond.wait()
            got = max(1, min(int(want), self._free))
            self._free -= got
            self.peak = max(self.peak, self.size - self._free)
        try:
            yield got
        finally:
            with self._cond:
                self._free += got
                self._cond.notify_all()


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
