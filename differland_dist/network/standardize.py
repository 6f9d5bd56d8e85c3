"""Predictor standardisation with the training pixels' statistics."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Standardizer(NamedTuple):
    """Mean and std per predictor column (hemisphere feature first), float64 for stability."""

    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, names, raw: np.ndarray) -> "Standardizer":
        """From raw training predictors (P, n) including the hemisphere column."""
        raw = np.asarray(raw, np.float64)
        std = raw.std(axis=0)
        # A constant column (e.g. CONTROL's "null", or one vegetation class absent from the
        # training pixels) would divide by zero: leave it centred but unscaled.
        std = np.where(std > 0, std, 1.0)
        return cls(tuple(names), raw.mean(axis=0), std)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return ((np.asarray(raw, np.float64) - self.mean) / self.std).astype(np.float32)


def hemisphere_feature(lat) -> np.ndarray:
    """sigmoid(latitude in degrees): the network's first input."""
    return 1.0 / (1.0 + np.exp(-np.asarray(lat, np.float64)))
