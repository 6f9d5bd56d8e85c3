"""Randomness of the synthetic Earth: one seeded stream per purpose, and smooth random fields
on the sphere (sums of random plane waves in 3-D, so the same seed gives the same geography at
every resolution).

Everything the Earth draws comes from ``numpy.random.default_rng([seed, purpose])``: the
purposes below are numbered once (never reorder: that changes every store).
"""

from __future__ import annotations

import numpy as np

# Purposes of the random streams (never reorder: that changes every store).
(RNG_GEOGRAPHY, RNG_ANOMALY, RNG_FIRE, RNG_SPLIT, RNG_TRUTH, RNG_NOISE, RNG_COVER,
 RNG_WEATHER) = range(8)


def stream(seed: int, purpose: int) -> np.random.Generator:
    """The random stream of ``purpose`` (one of the ``RNG_*`` numbers) for ``seed``."""
    return np.random.default_rng([int(seed), purpose])


def sphere_xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(P, 3) unit vectors of points given in degrees."""
    la, lo = np.deg2rad(lat.astype(np.float64)), np.deg2rad(lon.astype(np.float64))
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def smooth_fields(rng: np.random.Generator, xyz: np.ndarray, n: int, length: float,
                  waves: int = 48) -> np.ndarray:
    """(P, n) zero-mean unit-variance fields, correlation length ``length`` (radians).

    Each is sqrt(2/W) * sum of W cosines of random 3-D plane waves with wave vectors drawn from
    N(0, 1/length^2): a stationary Gaussian-like field with a squared-exponential covariance,
    defined everywhere on the sphere (independent of the grid).
    """
    k = rng.normal(0.0, 1.0 / length, size=(n, waves, 3))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, waves))
    out = np.empty((xyz.shape[0], n), dtype=np.float64)
    for i in range(n):
        out[:, i] = np.sqrt(2.0 / waves) * np.cos(xyz @ k[i].T + phase[i]).sum(axis=1)
    return out



def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(s: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (P, k) scores."""
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
