"""Type and range checks for configuration values.

Every check names the full dotted key first (``training.seed: must be in [0, 4294967295],
got -1``) and raises :class:`~differland_dist.errors.ConfigError`, so a bad value fails when
the config is built, before any store is opened or any cluster started. Each returns the
value in its canonical type (an integral float such as YAML's ``1e3`` becomes an int, an int
given for a real number becomes a float).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Iterable, Mapping

from differland_dist.errors import ConfigError


def _n(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_n(lo)}, {_n(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_n(lo)}"
    return f"{'<' if hi_open else '<='} {_n(hi)}"


def _in_range(key: str, v, lo, hi, lo_open: bool, hi_open: bool, shown) -> None:
    bad = ((lo is not None and (v <= lo if lo_open else v < lo))
           or (hi is not None and (v >= hi if hi_open else v > hi)))
    if bad:
        raise ConfigError(f"{key}: must be {_range_text(lo, hi, lo_open, hi_open)}, got {shown!r}")


def integer(key: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An integer in [lo, hi] (either bound optional); integral floats (``1e3``) are accepted."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    v = int(value)
    _in_range(key, v, lo, hi, False, False, v)
    return v


def number(key: str, value: Any, lo: float | None = None, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number within the given bounds (open or closed)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{key}: must be a finite number, got {v!r}")
    _in_range(key, v, lo, hi, lo_open, hi_open, value)
    return v


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def string(key: str, value: Any, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if not empty and not value.strip():
        raise ConfigError(f"{key}: must not be empty")
    return value


def choice(key: str, value: Any, options: Iterable[Any]) -> Any:
    options = tuple(options)
    if isinstance(value, bool) or value not in options:
        raise ConfigError(f"{key}: must be one of {', '.join(repr(o) for o in options)}, got {value!r}")
    return value


def mapping(key: str, value: Any) -> dict:
    """A mapping with string keys, as a plain dict."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{key}: keys must be strings, got {bad!r}")
    return dict(value)
