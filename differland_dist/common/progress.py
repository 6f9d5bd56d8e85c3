"""Progress of a long step as log lines: done / total, rate and ETA, at most every few seconds
and at the end.

One mechanism for every long step that has no progress bar of its own (validate's chunk scan,
import-netcdf's reads, SHAP tasks, inference's chunks). Lines go to this module's logger at
INFO, so ``-q`` and the CLI's ``--no-progress`` (which raises this logger to WARNING) hide them.
"""

from __future__ import annotations

import logging
import math
import threading
import time

log = logging.getLogger(__name__)


def enable(on: bool) -> None:
    """Show (True) or hide (False) progress lines in this process."""
    log.setLevel(logging.NOTSET if on else logging.WARNING)


class Progress:
    """Counts units of work done; thread-safe, so pool callbacks may call :meth:`add`.

    Args:
      what: names the step in each line, e.g. ``"validate gs://b/s.zarr: blocks"``.
      total: units to do (0 or less: the line has no percentage or ETA).
      every_s: seconds between lines (the last unit always logs).
    """

    def __init__(self, what: str, total: int, every_s: float = 5.0):
        self.what, self.total, self.every = what, int(total), float(every_s)
        self.done = 0
        self.t0 = self.last = time.perf_counter()
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.done += int(n)
            now = time.perf_counter()
            finished = self.total > 0 and self.done >= self.total
            if not (finished or now - self.last >= self.every):
                return
            self.last = now
            elapsed = max(now - self.t0, 1e-9)
            if self.total > 0:
                rate = self.done / elapsed
                eta = (self.total - self.done) / rate if rate > 0 else math.inf
                log.info("%s: %d / %d (%.0f %%), %.1f s%s", self.what, self.done, self.total,
                         100.0 * self.done / self.total, elapsed,
                         "" if finished else f", ETA {eta:.0f} s")
            else:
                log.info("%s: %d done, %.1f s", self.what, self.done, elapsed)
