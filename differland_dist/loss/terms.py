"""The DifferLand loss: every term by name, configurable streams and weights.

The terms come from the stream table (``differland_dist.vocabulary.streams``): each stream's term(s),
dispatched on aggregation (monthly, annual, static, anomaly) and level (pixel, patch), then
the two physical penalties (violation, EDC). Inputs are the per-step series of a lean rollout
(P, T), the observations as :class:`~differland_dist.vocabulary.labels.Labels` ((P, T) value and weight
per stream by name), and the batch's patch structure:
``patch`` (P,) local patch index in [0, n_patches) and ``valid`` (P,) 1 for real pixels,
0 for padding (a patch's padding rows carry its index). Patch-level terms compare patch means
and are summed over patches.

Parity mode (``LossConfig.parity=True``) reproduces the published loss exactly, quirks
included:
* annual terms and the EDC's January pools assume 12 steps a year whatever the data;
* the water anomaly's mean is taken over all observed steps, warm-up included;
* violation and EDC use all steps, warm-up included (also outside parity mode: they are
  physical penalties, not data misfits);
* patch-level terms (NBE, NBE-IAV, fire, water) divide a patch's sums by its rows in the
  batch, padding included (the published batch is padded to 320 rows and averaged over all of
  them), not by its real pixel count: a partial patch weighs less. A worker pads every patch
  to the store's largest patch (320 pixels on the paper's driver, whose 4° x 5° patches
  hold 320 cells at 0.25°), so the divisor is the reference's when that patch is full.
Outside parity mode, annual terms use the data's steps per year (``steps_per_year``) and
only whole years after warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Mapping

import jax
import jax.numpy as jnp

from differland_dist.common import checks
from differland_dist.vocabulary import streams
from differland_dist.errors import ConfigError, DifferlandError
from differland_dist.vocabulary.aggregation import annual_means, annual_weights, patch_sum, sum_series
from differland_dist.vocabulary.labels import Labels


def _term_table() -> dict[str, tuple[str | None, float]]:
    """Term name -> (stream it reads, paper weight), from the stream table (read at call time,
    so a changed table changes the loss)."""
    return {t.name: (st.name if st else None, t.weight) for st, t in streams.terms()}


def _default_enabled() -> dict[str, bool]:
    """Every term on except a non-assimilated stream's main term (VOD, as in the paper)."""
    return {t.name: st is None or t.name != st.name or st.assimilated for st, t in streams.terms()}


#: Term name -> (stream it reads, paper weight), derived from ``differland_dist.vocabulary.streams``.
#: "violation" and "edc" read no stream (EDC is switched per pixel by the weight at the first
#: step of the stream marked ``edc_gate``, LAI, as published).
TERMS: dict[str, tuple[str | None, float]] = _term_table()
TERM_NAMES = tuple(TERMS)
#: Terms that compare annual means of whole years after warm-up.
ANNUAL_TERMS = tuple(t.name for _, t in streams.terms() if t.aggregation == "annual")

EDC_FLUXES = (
    "labile_production", "labile_release", "labile_fire_combust", "labile_fire_transfer",
    "leaf_production", "leaf_litter", "foliar_fire_transfer", "foliar_fire_combust",
    "wood_production", "wood_litter", "wood_fire_combust", "wood_fire_transfer",
    "root_production", "root_litter", "root_fire_combust", "root_fire_transfer",
    "respiration_hetero_litter", "litter_to_som", "litter_fire_combust", "litter_fire_transfer",
    "respiration_hetero_som", "som_fire_combust",
)
_POOL_SERIES = ("next_labile_pool", "next_foliar_pool", "next_root_pool", "next_wood_pool",
                "next_litter_pool", "next_som_pool")


@dataclass(frozen=True)
class LossConfig:
    """Which terms are on, their weights (paper defaults), and the time conventions."""

    #: term -> on/off; terms not named keep their default
    enabled: Mapping[str, bool] = field(default_factory=_default_enabled)
    #: term -> weight; terms not named keep the paper's
    weights: Mapping[str, float] = field(default_factory=lambda: {t: w for t, (_, w) in _term_table().items()})
    warm_up: int = 0                 # steps excluded from data terms
    steps_per_year: int = 12  # time steps per year of the data, for annual terms
    parity: bool = False  # reproduce the published loss exactly, quirks included
    epsilon: float = 1e-3  # added to weight sums in the means' denominators

    def __post_init__(self):
        given = {}
        table = _term_table()
        for name, m in (("loss.enabled", self.enabled), ("loss.weights", self.weights)):
            given[name] = checks.mapping(name, m)
            unknown = set(m) - set(table)
            if unknown:
                raise ConfigError(f"{name}: unknown term(s) {sorted(unknown)}; known: {list(table)}")
        # Fill defaults for terms not mentioned, so a partial mapping from YAML works.
        en = _default_enabled()
        en.update({k: checks.boolean(f"loss.enabled.{k}", v) for k, v in given["loss.enabled"].items()})
        w = {t: wt for t, (_, wt) in table.items()}
        w.update({k: checks.number(f"loss.weights.{k}", v, 0) for k, v in given["loss.weights"].items()})
        if not any(en.values()):
            raise ConfigError("loss.enabled: every term is off (a stream whose data.products "
                              "entry is null switches its terms off too); switch one on")
        object.__setattr__(self, "enabled", en)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "warm_up", checks.integer("loss.warm_up", self.warm_up, 0))
        object.__setattr__(self, "steps_per_year",
                           checks.integer("loss.steps_per_year", self.steps_per_year, 1))
        checks.boolean("loss.parity", self.parity)
        object.__setattr__(self, "epsilon", checks.number("loss.epsilon", self.epsilon, 0, lo_open=True))

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(t for t in self.enabled if self.enabled[t])

    def __hash__(self):  # usable as a static jit argument
        return hash((tuple(sorted(self.enabled.items())), tuple(sorted(self.weights.items())),
                     self.warm_up, self.steps_per_year, self.parity, self.epsilon))

    def __eq__(self, other):
        return isinstance(other, LossConfig) and hash(self) == hash(other) and all(
            getattr(self, f.name) == getattr(other, f.name) for f in fields(self))


def required_series(cfg: LossConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(per-step outputs, time-summed outputs) that a lean rollout must provide for ``cfg``."""
    need: list[str] = ["violation"]
    for st, t in streams.terms():
        if st is not None and cfg.enabled[t.name]:
            need += st.outputs
    sums: tuple[str, ...] = ()
    if cfg.enabled["edc"]:
        need += list(_POOL_SERIES)
        sums = EDC_FLUXES
    return tuple(dict.fromkeys(need)), sums


def check_labels(labels) -> None:
    """Raise for labels the loss cannot take (checks only the pytree's structure, so it costs
    nothing under ``jax.jit``)."""
    if not isinstance(labels, Labels):
        raise DifferlandError(f"loss: labels must be a Labels pytree, got {type(labels).__name__} "
                              "(Labels.from_published converts a (P, T, 24) published array)")
    if labels.time_test is not None:
        raise DifferlandError("loss: the labels carry the store's time split (time_test); "
                              "choose its train or test steps with labels.time_split(test) first")


def _sse(pred, obs, w):
    return jnp.sum((pred - obs) ** 2 * w)


def _patch_error(pred, obs, w, patch, valid, n_patches, padded: bool = False, patch_rows: int = 0):
    """Σ_patches Σ_t (mean_p(pred·w) − mean_p(obs·w))² · mean_p(w); pred etc. (P, X).

    The means sum over a patch's valid pixels and divide by its real pixel count, or with
    ``padded`` (parity) by its rows in the batch, padding included: the published loss takes
    ``jnp.mean(·, axis=0)`` over the batch padded to 320 rows (``generate_data_loader``), so a
    patch of n < 320 pixels has its means scaled by n/320 and the term by (n/320)³. With
    ``patch_rows`` > 0 the padded count is that constant for every patch (batches that pack
    patches without padding each, :mod:`differland_dist.distributed.shard`).
    """
    if padded and patch_rows:
        count = jnp.full((n_patches, 1), float(patch_rows), jnp.float32)
    else:
        rows = valid if not padded else jnp.ones_like(valid)
        count = patch_sum(jnp.asarray(rows), patch, n_patches)[:, None]
        count = jnp.maximum(count, 1.0)

    def pmean(x):
        return patch_sum(jnp.asarray(x * valid[:, None]), patch, n_patches) / count

    return jnp.sum((pmean(pred * w) - pmean(obs * w)) ** 2 * pmean(w))


def _edc(series, totals, initial_pools, eps, spy):
    s = totals
    flows = (
        (s["labile_production"], s["labile_release"] + s["labile_fire_combust"] + s["labile_fire_transfer"]),
        (s["leaf_production"] + s["labile_release"], s["leaf_litter"] + s["foliar_fire_transfer"] + s["foliar_fire_combust"]),
        (s["root_production"], s["root_litter"] + s["root_fire_combust"] + s["root_fire_transfer"]),
        (s["wood_production"], s["wood_litter"] + s["wood_fire_combust"] + s["wood_fire_transfer"]),
        (s["leaf_litter"] + s["root_litter"] + s["labile_fire_transfer"] + s["foliar_fire_transfer"] + s["root_fire_transfer"],
         s["respiration_hetero_litter"] + s["litter_to_som"] + s["litter_fire_combust"] + s["litter_fire_transfer"]),
        (s["wood_litter"] + s["litter_to_som"] + s["wood_fire_transfer"] + s["litter_fire_transfer"],
         s["respiration_hetero_som"] + s["som_fire_combust"]),
    )
    total = 0.0
    for k, ((fin, fout), pool) in enumerate(zip(flows, _POOL_SERIES)):
        ratio = fin / jnp.maximum(fout, eps)
        jan = jnp.mean(series[pool][:, spy - 1::spy], axis=1)
        r = ratio * jan / initial_pools[:, k]
        total = total + (jnp.abs(jnp.log(r + eps)) / jnp.log(2.0)) ** 2
    return total  # (P,)


def _stream_term(st: streams.Stream, term: streams.Term, series, labels, patch, valid, n_patches: int,
                 cfg: LossConfig, spy: int, patch_rows: int = 0):
    """One stream term, unweighted: dispatch on the term's aggregation and the stream's level."""
    wu = cfg.warm_up
    val, w_all = labels.stream(st.name)
    obs, w = val[:, wu:], w_all[:, wu:] * valid[:, None]
    model = sum_series(series, st.outputs)  # the stream's model side, in table order
    if term.aggregation == "static":  # one observation per pixel (step 0) vs the time mean
        return _sse(jnp.mean(model[:, wu:], axis=1), val[:, 0], w_all[:, 0] * valid)
    if term.aggregation == "anomaly":
        if cfg.parity:  # published: the mean over all observed steps, warm-up included
            ref, w_ref = model, w_all
        else:
            ref, w_ref = model[:, wu:], w
        mean = jnp.sum(ref * w_ref, axis=1) / (jnp.sum(w_ref, axis=1) + cfg.epsilon)
        pred = model[:, wu:] - mean[:, None]
    elif term.aggregation == "annual":
        pred, obs = annual_means(model[:, wu:], spy), annual_means(obs, spy)
        w = annual_weights(w, spy)
    else:  # monthly
        pred = model[:, wu:]
    if st.level == "patch":
        return _patch_error(pred, obs, w, patch, valid, n_patches, padded=cfg.parity,
                            patch_rows=patch_rows)
    return _sse(pred, obs, w)


def loss_terms(series: Mapping[str, jax.Array], totals: Mapping[str, jax.Array], initial_pools,
               labels, patch, valid, n_patches: int, cfg: LossConfig,
               patch_rows: int = 0) -> dict[str, jax.Array]:
    """Every enabled term, weighted, by name (scalars): one per stream term of the stream
    table (``differland_dist.vocabulary.streams``), in its order, then the two physical penalties.

    Args:
      series: name -> (P, T) per-step outputs (see :func:`required_series`).
      totals: name -> (P,) time sums (EDC fluxes).
      initial_pools: (P, 7) physical initial pools.
      labels: :class:`Labels` of (P, T) leaves (no ``time_test``: see ``Labels.time_split``);
      patch: (P,) int; valid: (P,) float; n_patches: static int.
      patch_rows: static; > 0: under ``parity`` each patch counts as that many rows (its
        padded size) in patch means, whatever rows it has in the batch.
    """
    check_labels(labels)
    on, W = cfg.enabled, cfg.weights
    spy = 12 if cfg.parity else cfg.steps_per_year
    out: dict[str, jax.Array] = {}
    for st, term in streams.terms():
        if st is not None and on[term.name]:
            out[term.name] = _stream_term(st, term, series, labels, patch, valid, n_patches,
                                          cfg, spy, patch_rows) * W[term.name]
    if on["violation"]:
        out["violation"] = jnp.sum(series["violation"] * valid[:, None]) * W["violation"]
    if on["edc"]:
        _, gate_w = labels.stream(streams.edc_gate().name)
        edc = _edc(series, totals, initial_pools, cfg.epsilon, spy)
        out["edc"] = jnp.sum(edc * gate_w[:, 0] * valid) * W["edc"]
    return out


def total_loss(terms: Mapping[str, jax.Array]) -> jax.Array:
    return sum(terms.values())


def stream_of_term(term: str) -> str | None:
    return TERMS[term][0]

