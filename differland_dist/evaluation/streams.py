"""How each observation stream is compared with the model, and the block-wise accumulators.

Each stream's rule derives from the stream table (``differland_dist.vocabulary.streams``): the model side
is a sum of inference output series (see :func:`rules`), compared after the warm-up steps the
way the loss compares it (the table's aggregation):

* ``monthly``: every observed step (sif, lai, nbe, fire, gpp_flux, reco_flux = gpp + nee,
  et_flux, et_gleam);
* ``annual``: means over whole years after warm-up, where every step of the year is observed
  (biomass = labile + foliar + wood + root pools, vod);
* ``static``: one value per pixel vs the model's time mean after warm-up (som);
* ``anomaly``: the water pool minus its mean over the pixel's observed steps (ewt).

Units are pixels, or patches for patch-level streams (the table's level; nbe, fire, ewt):
a patch's value at a step is the mean over its pixels observed at that step, for both sides.
Observation weights only mark gaps (weight > 0 = observed); metrics are unweighted.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np

from differland_dist.evaluation import metrics
from differland_dist.vocabulary.aggregation import annual_means, annual_weights, patch_sum, sum_series
from differland_dist.vocabulary.series import stream_series
from differland_dist.vocabulary.streams import label_order

SPLITS = ("train", "dev", "test")  # by split code 0, 1, 2 (differland_dist.data.splits)


class Rule(NamedTuple):
    stream: str
    series: tuple[str, ...]  # inference output series summed for the model side
    kind: str                # monthly | annual | static | anomaly
    level: str               # pixel | patch


def rules() -> dict[str, Rule]:
    """stream -> comparison rule, in label order, from the stream table (``differland_dist.
    streams``, read at call time): its aggregation, level, and the inference output series
    that hold its model side."""
    return {st.name: Rule(st.name, stream_series(st.outputs), st.aggregation, st.level)
            for st in label_order()}


#: stream -> comparison rule, in label order (:func:`rules` at import).
RULES: dict[str, Rule] = rules()


def model_side(rule: Rule, series: Mapping[str, np.ndarray]) -> np.ndarray:
    """(P, T) float64 model values of a stream: the sum of its output series."""
    return sum_series(series, rule.series, cast=lambda a: np.asarray(a, np.float64))


def comparable(rule: Rule, obs: np.ndarray, weight: np.ndarray, sim: np.ndarray,
               steps_per_year: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(obs, sim, mask) of shape (P, X) for a stream's comparison (X steps, years or 1).

    Args:
      obs, weight: (P, T) after warm-up (weight 0 at gaps); sim: (P, T) model side.
    """
    seen = weight > 0
    if rule.kind == "monthly":
        return obs, sim, seen
    if rule.kind == "annual":
        return (annual_means(obs, steps_per_year), annual_means(sim, steps_per_year),
                annual_weights(seen.astype(np.float64), steps_per_year) > 0)
    if rule.kind == "static":
        return obs[:, :1], sim.mean(axis=1, keepdims=True), seen[:, :1]
    if rule.kind == "anomaly":
        n = seen.sum(axis=1, keepdims=True)
        mean = np.where(n > 0, (sim * seen).sum(axis=1, keepdims=True) / np.maximum(n, 1),
                        sim.mean(axis=1, keepdims=True))
        return obs, sim - mean, seen
    raise ValueError(f"unknown comparison kind {rule.kind!r}")


class _Sample:
    """A bounded random sample of (obs, sim) pairs for the density scatter plots."""

    def __init__(self, cap: int, seed: int = 0):
        self.cap = int(cap)
        self.rng = np.random.default_rng(seed)
        self.o: list[np.ndarray] = []
        self.s: list[np.ndarray] = []
        self.n = 0

    def add(self, o: np.ndarray, s: np.ndarray) -> None:
        if o.size > self.cap:
            keep = self.rng.choice(o.size, self.cap, replace=False)
            o, s = o[keep], s[keep]
        self.o.append(o.astype(np.float32))
        self.s.append(s.astype(np.float32))
        self.n += o.size
        if self.n > 4 * self.cap:
            self._shrink()

    def _shrink(self) -> None:
        o, s = np.concatenate(self.o), np.concatenate(self.s)
        keep = self.rng.choice(o.size, min(o.size, self.cap), replace=False)
        self.o, self.s, self.n = [o[keep]], [s[keep]], keep.size

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.o:
            return np.empty(0, np.float32), np.empty(0, np.float32)
        self._shrink()
        return self.o[0], self.s[0]


class UnitAccumulator:
    """Flat moments, per-unit means and per-unit scores of (unit, X) blocks, per split."""

    def __init__(self, sample_cap: int = 50_000, min_obs_temporal: int = 3):
        self.min_obs = int(min_obs_temporal)
        self.moments = {sp: metrics.Moments() for sp in SPLITS}
        self.means: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {sp: [] for sp in SPLITS}
        self.rows: dict[str, list[dict[str, np.ndarray]]] = {sp: [] for sp in SPLITS}
        self.samples = {sp: _Sample(sample_cap, i) for i, sp in enumerate(SPLITS)}

    def add(self, obs: np.ndarray, sim: np.ndarray, mask: np.ndarray, split: np.ndarray) -> None:
        """Add units (rows) with their split code (0 train, 1 dev, 2 test)."""
        for code, sp in enumerate(SPLITS):
            sel = np.asarray(split) == code
            if not sel.any():
                continue
            o, s = obs[sel], sim[sel]
            m = mask[sel] & np.isfinite(o) & np.isfinite(s)
            if not m.any():
                continue
            self.moments[sp] = self.moments[sp] + metrics.Moments.of(o, s, m)
            self.means[sp].append(metrics.unit_means(o, s, m))
            if o.shape[1] > 1:
                self.rows[sp].append(metrics.row_scores(o, s, m))
            self.samples[sp].add(o[m], s[m])

    def result(self) -> dict[str, dict[str, dict[str, float]]]:
        """split -> view (flat, spatial, temporal) -> metrics."""
        out = {}
        for sp in SPLITS:
            if self.means[sp]:
                mo = np.concatenate([a for a, _ in self.means[sp]])
                ms = np.concatenate([b for _, b in self.means[sp]])
                spatial = metrics.scores(mo, ms)
            else:
                spatial = metrics.empty_scores()
            spatial["n_units"] = int(spatial["n"])
            temporal = metrics.summarize_rows(metrics.concat_rows(self.rows[sp]), self.min_obs)
            out[sp] = {"flat": self.moments[sp].scores(), "spatial": spatial, "temporal": temporal}
        return out


class PatchAccumulator:
    """Sums of observed pixels per (patch, X) across blocks; patch means at the end."""

    def __init__(self, patch_ids: np.ndarray, patch_split: np.ndarray, n_x: int, **kw):
        self.ids = np.asarray(patch_ids)
        self.split = np.asarray(patch_split)
        shape = (self.ids.size, int(n_x))
        self.so, self.ss, self.cnt = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self.kw = kw

    def add(self, obs: np.ndarray, sim: np.ndarray, mask: np.ndarray, patch: np.ndarray) -> None:
        idx = np.searchsorted(self.ids, np.asarray(patch))
        m = mask & np.isfinite(obs) & np.isfinite(sim)
        n = self.ids.size
        patch_sum(np.where(m, obs, 0.0), idx, n, out=self.so)
        patch_sum(np.where(m, sim, 0.0), idx, n, out=self.ss)
        patch_sum(m.astype(np.float64), idx, n, out=self.cnt)

    def result(self) -> tuple[dict, UnitAccumulator]:
        seen = self.cnt > 0
        c = np.maximum(self.cnt, 1.0)
        acc = UnitAccumulator(**self.kw)
        acc.add(self.so / c, self.ss / c, seen, self.split)
        return acc.result(), acc


def pairs(acc: UnitAccumulator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> sampled (obs, sim) pairs of an accumulator (for scatter plots)."""
    return {sp: acc.samples[sp].pairs() for sp in SPLITS}
