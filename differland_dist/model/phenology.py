"""Leaf-fall and labile-release factors (Bloom et al. 2016 form)."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

_OFFSET_POLY = (0.000023599784710, 0.000332730053021, 0.000901865258885,
                -0.005437736864888, -0.020836027517787, 0.126972018064287,
                -0.188459767342504)
_SF = 365.25 / jnp.pi


class PhenologyShape(NamedTuple):
    """Time-invariant part of one factor: amplitude f, width w (days), phase offset (days)."""

    f: object
    w: object
    offset: object


def _offset(lifespan, w):
    p1, p2, p3, p4, p5, p6, p7 = _OFFSET_POLY
    lf = jnp.log(lifespan - 1)
    return (p1 * lf**6 + p2 * lf**5 + p3 * lf**4 + p4 * lf**3 + p5 * lf**2 + p6 * lf + p7) * w


def shape(lifespan, period) -> PhenologyShape:
    """Constants of a factor from a lifespan (years) and a period (days)."""
    f = (jnp.log(lifespan) - jnp.log(lifespan - 1)) * 0.5
    w = period * jnp.sqrt(2) / 2
    return PhenologyShape(f, w, _offset(lifespan, w))


def factor(t, date, s: PhenologyShape):
    """Fraction of the pool released per day at time t (days), peaking near ``date``."""
    return (2 / jnp.sqrt(jnp.pi)) * (s.f / s.w) * jnp.exp(
        -(jnp.sin((t - date + s.offset) / _SF) * _SF / s.w) ** 2)
