"""Reading for evaluation: pixel blocks of observations (the input store, through its row
reader) and of model series (the inference output, through zarr), and the output's time axis
and parameters."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import xarray as xr

from differland_dist.data import schema
from differland_dist.data.rows import RowReader, with_retries
from differland_dist.data.store import PixelStore, quiet_zarr
from differland_dist.vocabulary.parameters import PARAM_NAMES
from differland_dist.vocabulary.grid import Grid
from differland_dist.vocabulary.series import param_var


class Blocks:
    """Reads pixel blocks of observations (input store, through its row reader) and of
    series (the inference output, through zarr)."""

    def __init__(self, store: PixelStore, group, threads: int = 8):
        self.store, self.group = store, group
        self.rows = RowReader(store, max_workers=threads)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="eval-read")

    def obs(self, names: Sequence[str], s: slice) -> dict[str, np.ndarray]:
        return self.rows.read(names, s)

    def series(self, names: Sequence[str], s: slice) -> dict[str, np.ndarray]:
        with quiet_zarr():
            arrays = [self.group[n] for n in names]
        return dict(zip(names, self.pool.map(
            lambda a: np.asarray(with_retries(lambda: a[s], f"output {a.path}",
                                             fs=getattr(a.store, "fs", None))), arrays)))

    def close(self) -> None:
        self.rows.close()
        self.pool.shutdown(wait=True)


def obs_pair(v: dict[str, np.ndarray], product: str, P: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """(value, weight) (P, T) float64 of a product, gaps as weight 0 (static products broadcast)."""
    val = np.asarray(v[schema.obs_value_name(product)], np.float64)
    w = np.asarray(v[schema.obs_weight_name(product)], np.float64)
    if val.ndim == 1:
        val, w = (np.broadcast_to(a[:, None], (P, T)) for a in (val, w))
    ok = np.isfinite(val) & (w > 0)
    return np.where(ok, val, np.nan), np.where(ok, w, 0.0)


def obs_vars(plan: dict[str, dict], streams) -> list[str]:
    """The store's value and weight variables of the products of ``streams`` (sorted)."""
    return sorted({v for s in streams for v in (schema.obs_value_name(plan[s]["product"]),
                                                schema.obs_weight_name(plan[s]["product"]))})


def block_slices(n: int, chunk: int, block_pixels: int) -> list[slice]:
    """Consecutive pixel slices of ``block_pixels`` rounded down to whole chunks (at least one)."""
    bp = max(chunk, (block_pixels // chunk) * chunk)
    return [slice(a, min(a + bp, n)) for a in range(0, n, bp)]


def patch_blocks(store: PixelStore, block_pixels: int) -> list[slice]:
    """Consecutive pixel slices of whole patches (patches are contiguous runs of the pixel
    axis), each about ``block_pixels`` pixels (a larger patch is a block of its own)."""
    runs = sorted(store.patch_slices.values(), key=lambda s: s.start)
    blocks: list[slice] = []
    a = b = None
    for r in runs:
        if a is None:
            a, b = r.start, r.stop
        elif r.stop - a > block_pixels:
            blocks.append(slice(a, b))
            a, b = r.start, r.stop
        else:
            b = r.stop
    if a is not None:
        blocks.append(slice(a, b))
    return blocks


def output_times(group) -> np.ndarray:
    """The output's time axis decoded to datetimes (raw numbers if its units are undecodable)."""
    with quiet_zarr():
        t = group["time"]
        num = np.asarray(t[:], np.float64)
        units = t.attrs.get("units", "days since 2001-01-01")
        cal = t.attrs.get("calendar", "standard")
    try:
        return np.asarray(xr.coding.times.decode_cf_datetime(num, units, cal))
    except Exception:  # noqa: BLE001 - undecodable units: plot raw numbers
        return num


def output_params(group) -> np.ndarray:
    """The output's parameters (P, 40) float64, in ``PARAM_NAMES`` order."""
    with quiet_zarr():
        return np.stack([np.asarray(group[param_var(n)][:], np.float64)
                         for n in PARAM_NAMES], axis=1)


def output_grid(group) -> Grid:
    """The output's ``Grid`` (lat, lon, row, col)."""
    with quiet_zarr():
        return Grid(np.asarray(group["lat"][:]), np.asarray(group["lon"][:]),
                    np.asarray(group["row"][:], np.int64), np.asarray(group["col"][:], np.int64))
