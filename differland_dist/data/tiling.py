"""The regular-grid helpers stores share (the synthetic Earth and ``import-cube``): patch tiles
of grid cells and the monthly time axis. Free of JAX."""

from __future__ import annotations

import calendar
import math
from datetime import date

import numpy as np


def patch_tile(resolution: float, max_patch_size: int) -> tuple[int, int]:
    """Grid cells per patch tile: 4 x 5 degrees (the paper's 320 pixels at 0.25 deg), at least
    4 x 4 cells on coarse grids, halved along the longer side until it holds max_patch_size."""
    a = max(4, math.ceil(4 / resolution - 1e-9))
    b = max(4, math.ceil(5 / resolution - 1e-9))
    while a * b > max_patch_size:
        if a >= b:
            a = math.ceil(a / 2)
        else:
            b = math.ceil(b / 2)
        if a == b == 1:
            break
    return a, b


def monthly_axis(start: int, years: int) -> dict[str, np.ndarray]:
    """Mid-month ``time`` (days since 2001-01-01), ``doy``, ``delta_t`` (days in the month),
    and ``year`` of each month from January of ``start``."""
    ref = date(2001, 1, 1)
    t, doy, dt, yr = [], [], [], []
    for y in range(start, start + years):
        for m in range(1, 13):
            n = calendar.monthrange(y, m)[1]
            first = date(y, m, 1)
            mid = (first - ref).days + n / 2.0
            t.append(mid)
            doy.append((first - date(y, 1, 1)).days + n / 2.0 + 1.0)
            dt.append(n)
            yr.append(y)
    return {"time": np.array(t, np.float64), "doy": np.array(doy, np.float32),
            "delta_t": np.array(dt, np.float32), "year": np.array(yr, np.int32)}
