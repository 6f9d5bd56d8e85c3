"""Vectorisable float32 cos, tan and arccos for the day-length formula.

XLA:CPU lowers ``cos``, ``tan`` and ``arccos`` (via ``atan2``) to one scalar libm call per
element, 5-10 ns each, while its ``exp``, ``log``, ``sqrt`` and arithmetic are SIMD
polynomials at ~0.3 ns. Day length needs four of those calls per pixel-month, which made it a
fifth of a CPU forward rollout. These versions use only arithmetic, ``sqrt`` and ``where``, so
XLA vectorises them; they agree with float64 to a few ulp on the ranges the model uses
(tested in ``tests/test_fastmath.py``). Other dtypes (float64 gradient checks) use ``jnp``'s
own functions.

The polynomials are the classic minimax fits for single precision (as in the Cephes library):
range reduction by pi/2 with a three-part constant (exact for |x| below ~8000), then odd/even
polynomials on [-pi/4, pi/4]; ``arcsin`` by a polynomial on [0, 0.5] and the half-angle
identity above it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

_TWO_OVER_PI = np.float32(0.63661975)
# pi/2 split in three parts whose products with small integers are exact in float32
_PIO2_1, _PIO2_2, _PIO2_3 = np.float32(1.5703125), np.float32(4.837512969970703125e-4), \
    np.float32(7.54978995489188216e-8)
_S1, _S2, _S3 = np.float32(-1.6666654611e-1), np.float32(8.3321608736e-3), np.float32(-1.9515295891e-4)
_C1, _C2, _C3 = np.float32(4.166664568298827e-2), np.float32(-1.388731625493765e-3), \
    np.float32(2.443315711809948e-5)
_AS = (np.float32(4.2163199048e-2), np.float32(2.4181311049e-2), np.float32(4.5470025998e-2),
       np.float32(7.4953002686e-2), np.float32(1.6666752422e-1))
_PI = np.float32(np.pi)
_PI_2 = np.float32(np.pi / 2)


def _is_f32(x) -> bool:
    return jnp.result_type(x) == jnp.float32


def _reduce(x):
    """x = q * pi/2 + r with |r| <= ~pi/4; returns (r, q mod 4 as int32)."""
    q = jnp.round(x * _TWO_OVER_PI)
    r = ((x - q * _PIO2_1) - q * _PIO2_2) - q * _PIO2_3
    return r, q.astype(jnp.int32) & 3


def _sin_poly(r):
    z = r * r
    return r + r * z * (_S1 + z * (_S2 + z * _S3))


def _cos_poly(r):
    z = r * r
    return 1 - 0.5 * z + z * z * (_C1 + z * (_C2 + z * _C3))


def _reduced_sincos(x):
    """(sin r, cos r, q) with x = q * pi/2 + r."""
    r, q = _reduce(x)
    return _sin_poly(r), _cos_poly(r), q


def cos(x):
    """cos(x), x in radians (|x| < ~8000 for full accuracy)."""
    if not _is_f32(x):
        return jnp.cos(x)
    s, c, q = _reduced_sincos(x)
    # cos(q pi/2 + r) for q = 0, 1, 2, 3: c, -s, -c, s
    return jnp.where(q == 0, c, jnp.where(q == 1, -s, jnp.where(q == 2, -c, s)))


def tan(x):
    """tan(x), x in radians (|x| < ~8000 for full accuracy)."""
    if not _is_f32(x):
        return jnp.tan(x)
    s, c, q = _reduced_sincos(x)
    # tan(r + q pi/2) is tan(r) for even q and -cot(r) for odd q
    odd = (q & 1) == 1
    return jnp.where(odd, -c, s) / jnp.where(odd, s, c)


def _asin_small(x):
    """arcsin on |x| <= 0.5."""
    z = x * x
    a0, a1, a2, a3, a4 = _AS
    return ((((a0 * z + a1) * z + a2) * z + a3) * z + a4) * z * x + x


def arccos(x):
    """arccos(x) in radians for x in [-1, 1]."""
    if not _is_f32(x):
        return jnp.arccos(x)
    a = jnp.abs(x)
    big = a > 0.5
    # |x| > 0.5: arccos(|x|) = 2 arcsin(sqrt((1 - |x|) / 2)), which stays accurate near 1
    h = jnp.sqrt(jnp.maximum(0.5 * (1 - a), 0))
    acos_big = 2 * _asin_small(h)
    acos_big = jnp.where(x < 0, _PI - acos_big, acos_big)
    acos_small = _PI_2 - _asin_small(jnp.where(big, 0, x))
    return jnp.where(big, acos_big, acos_small)
