"""The network-input rule ``[sigmoid(lat), predictors]`` and its standardisation with the
training pixels' statistics."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from differland_dist.errors import CheckpointError


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


#: The name of the network's first input column (the standardiser's first name).
HEMISPHERE = "hemisphere"


def input_names(predictor_names) -> list[str]:
    """Names of the network input columns: ``[hemisphere, predictors...]``."""
    return [HEMISPHERE, *predictor_names]


def raw_inputs(raw, lat) -> np.ndarray:
    """(P, 1 + n) float64 unstandardised network inputs ``[sigmoid(lat), raw predictors]``:
    the one input rule (training fits :class:`Standardizer` on the training pixels' rows).

    Args:
      raw: (P, n) raw predictors in ``data.batch.predictor_names`` order.
      lat: (P,) pixel latitude, degrees north.
    """
    return np.concatenate([hemisphere_feature(lat)[:, None], np.asarray(raw, np.float64)], axis=1)


def network_inputs(raw, lat, standardizer: Standardizer) -> np.ndarray:
    """(P, 1 + n) float32 standardised network inputs: :func:`raw_inputs` standardised with
    the training pixels' statistics (CheckpointError if their column counts differ)."""
    full = raw_inputs(raw, lat)
    if full.shape[1] != np.shape(standardizer.mean)[0]:
        raise CheckpointError(f"the checkpoint standardises {np.shape(standardizer.mean)[0]} "
                              f"predictor columns, the store gives {full.shape[1]} "
                              "(hemisphere + predictors)")
    return standardizer.apply(full)
