"""The network-input rule ``[sigmoid(lat), predictors]`` and its standardisation with the
training pixels' statistics: one :class:`Standardizer` and one rule for constant columns
(:func:`column_scale`), whether the statistics come from the pixels themselves
(:meth:`Standardizer.fit`), from per-patch sums (:meth:`Standardizer.from_sums`, the
trainer) or from published tables (:mod:`~differland_dist.network.published`)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from differland_dist.errors import CheckpointError


#: A column whose std is at most this fraction of max(1, |mean|) counts as constant: CONTROL's
#: "null", a vegetation class absent from the training pixels, or a constant column whose
#: variance from running sums (E[x²] - E[x]²) is rounding noise instead of 0.
CONSTANT_TOLERANCE = 1e-12


def column_scale(mean, std) -> np.ndarray:
    """The divisor of each column: its std, or 1 for a constant column (centred, not scaled;
    dividing by ~0 would blow it up). The one rule every standardisation uses."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return np.where(std > CONSTANT_TOLERANCE * np.maximum(1.0, np.abs(mean)), std, 1.0)


class Standardizer(NamedTuple):
    """Mean and std per predictor column (hemisphere feature first), float64 for stability."""

    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, names, mean, std) -> "Standardizer":
        """From per-column mean and std (any source), constant columns unscaled (:func:`column_scale`)."""
        return cls(tuple(names), np.asarray(mean, np.float64), column_scale(mean, std))

    @classmethod
    def fit(cls, names, raw: np.ndarray) -> "Standardizer":
        """From raw training predictors (P, n) including the hemisphere column."""
        raw = np.asarray(raw, np.float64)
        return cls.of(names, raw.mean(axis=0), raw.std(axis=0))

    @classmethod
    def from_sums(cls, names, n: int, total, total_sq) -> "Standardizer":
        """From the pixel count, per-column sums and sums of squares (added in a fixed order
        by the caller, so the statistics do not depend on how the pixels were split)."""
        mean = total / n
        std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
        return cls.of(names, mean, std)

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
