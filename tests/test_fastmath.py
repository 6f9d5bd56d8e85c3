"""The vectorisable float32 cos/tan/arccos used for day length: accuracy against float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from differland_dist.model import acm, fastmath


def _ulps(got, ref):
    """Error in float32 ulps of the reference (absolute near zero crossings)."""
    ref32 = np.abs(ref).astype(np.float32)
    spacing = np.spacing(np.maximum(ref32, np.float32(1e-3))).astype(np.float64)
    return float(np.max(np.abs(np.asarray(got, np.float64) - ref) / spacing))


@pytest.mark.parametrize("name, lo, hi, max_ulps", [
    ("cos", 0.0, 7.0, 2.0),          # the declination's argument, radians
    ("cos", -800.0, 800.0, 2.0),      # and well beyond
    ("tan", -1.5707, 1.5707, 4.0),    # latitude and declination, radians
    ("arccos", -1.0, 1.0, 2.0),
])
def test_accuracy_against_float64(name, lo, hi, max_ulps):
    x = np.linspace(lo, hi, 400_001, dtype=np.float32)
    got = jax.jit(getattr(fastmath, name))(x)
    assert got.dtype == jnp.float32
    ref = getattr(np, name)(x.astype(np.float64))
    assert _ulps(got, ref) <= max_ulps


def test_special_points():
    x = np.array([-1, -0.5, 0, 0.5, 1], np.float32)
    np.testing.assert_allclose(fastmath.arccos(x), np.arccos(x.astype(np.float64)), rtol=2e-7, atol=0)
    np.testing.assert_allclose(fastmath.cos(np.float32([0, np.pi / 2, np.pi, 2 * np.pi])),
                               [1, 0, -1, 1], atol=1e-7)


def test_float64_uses_jnp():
    with jax.enable_x64(True):
        x = jnp.linspace(-1.5, 1.5, 101, dtype=jnp.float64)
        assert fastmath.tan(x).dtype == jnp.float64
        np.testing.assert_allclose(fastmath.tan(x), np.tan(np.asarray(x)), rtol=1e-15)


def _day_length_libm(lat, doy):
    """The published formula with jnp's (libm) functions, float32."""
    dec = -23.4 * jnp.cos((360 * (doy + 10) / 365) * jnp.pi / 180) * jnp.pi / 180
    mult = jnp.tan(lat * jnp.pi / 180) * jnp.tan(dec)
    valid = (mult < 1) * (mult > -1)
    d = 24 * jnp.arccos(-(mult * valid)) / jnp.pi
    below = mult < 1
    return (d * below + (1 - below) * 24) * (mult > -1)


def test_day_length_as_accurate_as_libm_version():
    lat, doy = np.meshgrid(np.linspace(-89.5, 89.5, 359, dtype=np.float32),
                           np.arange(1, 367, dtype=np.float32))
    got = np.asarray(jax.jit(acm.day_length)(lat, doy), np.float64)
    libm = np.asarray(jax.jit(_day_length_libm)(lat, doy), np.float64)
    # the same formula through float64 libm
    lat64, doy64 = lat.astype(np.float64), doy.astype(np.float64)
    dec = -23.4 * np.cos((360 * (doy64 + 10) / 365) * np.pi / 180) * np.pi / 180
    mult = np.tan(lat64 * np.pi / 180) * np.tan(dec)
    ref = np.where(mult >= 1, 24.0, np.where(mult <= -1, 0.0,
                                              24 * np.arccos(-np.clip(mult, -1, 1)) / np.pi))
    ok = np.abs(np.abs(mult) - 1) > 1e-4   # the polar switch may flip within rounding
    err, err_libm = np.abs(got - ref)[ok], np.abs(libm - ref)[ok]
    # the largest errors sit where arccos is steep (|mult| near 1); both lose ~1 s there
    assert err.max() < 1.5 * err_libm.max() and err.max() < 1e-3  # hours
    assert err.mean() < 1.5 * err_libm.mean()
    assert got.min() >= 0 and got.max() <= 24
