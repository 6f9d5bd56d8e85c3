"""Aggregated Canopy Model GPP (Williams et al. 1997), as used by DALEC 993."""

from __future__ import annotations

import jax.numpy as jnp

from differland_dist.model import fastmath

# ACM constants (Williams et al. 1997, as calibrated for DALEC).
_D1, _THETA, _K, _D2, _B2 = 0.0156935, 4.22273, 208.868, 0.0453194, 0.37836
_C1, _A2, _C2, _EB1T, _PSI_D, _H = 7.19298, 0.011136, 2.1001, 0.789798, -2.0, 1.0


def day_length(lat, doy):
    """Day length in hours from latitude (deg N) and day of year; polar day/night handled.

    cos, tan and arccos are :mod:`fastmath`'s vectorisable float32 versions (libm calls on
    XLA:CPU made this a fifth of a forward rollout).
    """
    dec = -23.4 * fastmath.cos((360 * (doy + 10) / 365) * jnp.pi / 180) * jnp.pi / 180
    mult = fastmath.tan(lat * jnp.pi / 180) * fastmath.tan(dec)
    valid = (mult < 1) * (mult > -1)
    dayl = 24 * fastmath.arccos(-(mult * valid)) / jnp.pi
    below_one = mult < 1
    dayl = dayl * below_one + (1 - below_one) * 24
    # The published code multiplies by (mult > -1) and adds a term that is always 0: polar
    # night keeps the arccos value of mult = 0 (12 h) times 0 = 0 hours.
    dayl = dayl * (mult > -1)
    return dayl


def acm_gpp(lai, t_min, t_max, swrad, co2, canopy_efficiency, dayl):
    """Potential GPP, gC m-2 d-1, before water stress. ``dayl`` from :func:`day_length`."""
    gc = jnp.abs(_PSI_D) ** _EB1T / (_B2 * _H + 0.5 * (t_max - t_min))
    p = lai * 1 * canopy_efficiency * jnp.exp(_A2 * t_max) / gc
    q = _THETA - _K
    ci = 0.5 * (co2 + q - p + jnp.sqrt((co2 + q - p) ** 2 - 4 * (co2 * q - p * _THETA)))
    e0 = _C1 * (lai**2) / (_C2 + lai**2)
    pd = gc * (co2 - ci)
    pi = e0 * swrad * pd / (e0 * swrad + pd)
    return pi * (_D1 * dayl + _D2)
