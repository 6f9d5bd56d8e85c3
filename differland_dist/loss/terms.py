"""The DifferLand loss: every term by name, configurable streams and weights.

Inputs are the per-step series of a lean rollout (P, T), labels (P, T, 24) as value/weight
pairs in the stream order of ``data.schema.STREAMS``, and the batch's patch structure:
``patch`` (P,) local patch index in [0, n_patches) and ``valid`` (P,) 1 for real pixels,
0 for padding. Patch-level terms compare patch means and are summed over patches.

Parity mode (``LossConfig.parity=True``) reproduces the published loss exactly, quirks
included:
* annual terms and the EDC's January pools assume 12 steps a year whatever the data;
* the water anomaly's mean is taken over all observed steps, warm-up included;
* violation and EDC use all steps, warm-up included (also outside parity mode: they are
  physical penalties, not data misfits).
Outside parity mode, annual terms use the data's steps per year (``steps_per_year``) and
only whole years after warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Mapping

import jax
import jax.numpy as jnp

from differland_dist import checks
from differland_dist.data.schema import STREAM_INDEX, STREAM_NAMES
from differland_dist.errors import ConfigError

#: Term name -> (stream it reads, paper weight). "violation" and "edc" read no stream
#: (EDC is switched per pixel by the LAI weight at the first step, as published).
TERMS: dict[str, tuple[str | None, float]] = {
    "sif": ("sif", 400.0),
    "lai": ("lai", 10.0),
    "biomass": ("biomass", 5e-5),
    "som": ("som", 3e-6),
    "nbe": ("nbe", 3000.0),
    "nbe_iav": ("nbe", 3000.0 * 3.46),
    "fire": ("fire", 1000.0),
    "ewt": ("ewt", 0.2),
    "vod": ("vod", 100.0),
    "gpp_flux": ("gpp_flux", 100.0),
    "reco_flux": ("reco_flux", 100.0),
    "et_flux": ("et_flux", 100.0),
    "et_gleam": ("et_gleam", 1.0),
    "violation": (None, 400.0),
    "edc": (None, 10.0),
}
TERM_NAMES = tuple(TERMS)
_DEFAULT_OFF = ("vod",)  # the paper does not assimilate VOD
#: Terms that compare annual means of whole years after warm-up.
ANNUAL_TERMS = ("biomass", "nbe_iav", "vod")

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

    enabled: Mapping[str, bool] = field(default_factory=lambda: {t: t not in _DEFAULT_OFF for t in TERMS})
    weights: Mapping[str, float] = field(default_factory=lambda: {t: w for t, (_, w) in TERMS.items()})
    warm_up: int = 0                 # steps excluded from data terms
    steps_per_year: int = 12
    parity: bool = False
    epsilon: float = 1e-3

    def __post_init__(self):
        given = {}
        for name, m in (("loss.enabled", self.enabled), ("loss.weights", self.weights)):
            given[name] = checks.mapping(name, m)
            unknown = set(m) - set(TERMS)
            if unknown:
                raise ConfigError(f"{name}: unknown term(s) {sorted(unknown)}; known: {list(TERMS)}")
        # Fill defaults for terms not mentioned, so a partial mapping from YAML works.
        en = {t: t not in _DEFAULT_OFF for t in TERMS}
        en.update({k: checks.boolean(f"loss.enabled.{k}", v) for k, v in given["loss.enabled"].items()})
        w = {t: wt for t, (_, wt) in TERMS.items()}
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
        return tuple(t for t in TERMS if self.enabled[t])

    def __hash__(self):  # usable as a static jit argument
        return hash((tuple(sorted(self.enabled.items())), tuple(sorted(self.weights.items())),
                     self.warm_up, self.steps_per_year, self.parity, self.epsilon))

    def __eq__(self, other):
        return isinstance(other, LossConfig) and hash(self) == hash(other) and all(
            getattr(self, f.name) == getattr(other, f.name) for f in fields(self))


def required_series(cfg: LossConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(per-step outputs, time-summed outputs) that a lean rollout must provide for ``cfg``."""
    need: list[str] = ["violation"]
    on = cfg.enabled
    if on["sif"]:
        need.append("SIF")
    if on["lai"]:
        need.append("lai")
    if on["biomass"]:
        need += ["next_labile_pool", "next_foliar_pool", "next_wood_pool", "next_root_pool"]
    if on["som"]:
        need.append("next_som_pool")
    if on["nbe"] or on["nbe_iav"]:
        need.append("nbe")
    if on["fire"]:
        need.append("total_fire_combust")
    if on["ewt"]:
        need.append("next_water_pool")
    if on["vod"]:
        need.append("vod")
    if on["gpp_flux"] or on["reco_flux"]:
        need.append("gpp")
    if on["reco_flux"]:
        need.append("nee")
    if on["et_flux"] or on["et_gleam"]:
        need.append("ET")
    sums: tuple[str, ...] = ()
    if on["edc"]:
        need += list(_POOL_SERIES)
        sums = EDC_FLUXES
    return tuple(dict.fromkeys(need)), sums


def _label(labels, stream):
    i = STREAM_INDEX[stream]
    return labels[..., 2 * i], labels[..., 2 * i + 1]


def _sse(pred, obs, w):
    return jnp.sum((pred - obs) ** 2 * w)


def _patch_error(pred, obs, w, patch, valid, n_patches):
    """Σ_patches Σ_t (mean_p(pred·w) − mean_p(obs·w))² · mean_p(w); pred etc. (P, X)."""
    count = jax.ops.segment_sum(valid, patch, num_segments=n_patches)[:, None]
    count = jnp.maximum(count, 1.0)

    def pmean(x):
        return jax.ops.segment_sum(x * valid[:, None], patch, num_segments=n_patches) / count

    return jnp.sum((pmean(pred * w) - pmean(obs * w)) ** 2 * pmean(w))


def _annual(x, spy):
    """(P, T) -> (P, T // spy, spy), whole years only."""
    n = x.shape[1] // spy
    return x[:, : n * spy].reshape(x.shape[0], n, spy)


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


def loss_terms(series: Mapping[str, jax.Array], totals: Mapping[str, jax.Array], initial_pools,
               labels, patch, valid, n_patches: int, cfg: LossConfig) -> dict[str, jax.Array]:
    """Every enabled term, weighted, by name (scalars).

    Args:
      series: name -> (P, T) per-step outputs (see :func:`required_series`).
      totals: name -> (P,) time sums (EDC fluxes).
      initial_pools: (P, 7) physical initial pools.
      labels: (P, T, 24); patch: (P,) int; valid: (P,) float; n_patches: static int.
    """
    on, W = cfg.enabled, cfg.weights
    wu = cfg.warm_up
    spy = 12 if cfg.parity else cfg.steps_per_year
    v2 = valid[:, None]
    out: dict[str, jax.Array] = {}

    def lab(stream):
        val, w = _label(labels, stream)
        return val[:, wu:], w[:, wu:] * v2

    def cut(name):
        return series[name][:, wu:]

    for term, (stream, model_side) in {
        "sif": ("sif", "SIF"), "lai": ("lai", "lai"), "gpp_flux": ("gpp_flux", "gpp"),
        "et_flux": ("et_flux", "ET"), "et_gleam": ("et_gleam", "ET"),
    }.items():
        if on[term]:
            obs, w = lab(stream)
            out[term] = _sse(cut(model_side), obs, w) * W[term]
    if on["reco_flux"]:
        obs, w = lab("reco_flux")
        out["reco_flux"] = _sse(cut("gpp") + cut("nee"), obs, w) * W["reco_flux"]
    if on["biomass"]:
        obs, w = lab("biomass")
        bio = cut("next_labile_pool") + cut("next_foliar_pool") + cut("next_wood_pool") + cut("next_root_pool")
        out["biomass"] = _sse(_annual(bio, spy).mean(2), _annual(obs, spy).mean(2),
                              jnp.prod(_annual(w, spy), axis=2)) * W["biomass"]
    if on["som"]:
        val, w = _label(labels, "som")
        out["som"] = _sse(jnp.mean(cut("next_som_pool"), axis=1), val[:, 0], w[:, 0] * valid) * W["som"]
    if on["nbe"]:
        obs, w = lab("nbe")
        out["nbe"] = _patch_error(cut("nbe"), obs, w, patch, valid, n_patches) * W["nbe"]
    if on["nbe_iav"]:
        obs, w = lab("nbe")
        out["nbe_iav"] = _patch_error(_annual(cut("nbe"), spy).mean(2), _annual(obs, spy).mean(2),
                                      jnp.prod(_annual(w, spy), axis=2), patch, valid, n_patches) * W["nbe_iav"]
    if on["fire"]:
        obs, w = lab("fire")
        out["fire"] = _patch_error(cut("total_fire_combust"), obs, w, patch, valid, n_patches) * W["fire"]
    if on["ewt"]:
        obs, w = lab("ewt")
        water = series["next_water_pool"]
        if cfg.parity:  # published: the mean over all observed steps, warm-up included
            _, w_all = _label(labels, "ewt")
        else:
            water, w_all = water[:, wu:], w
        mean = jnp.sum(water * w_all, axis=1) / (jnp.sum(w_all, axis=1) + cfg.epsilon)
        anomaly = series["next_water_pool"][:, wu:] - mean[:, None]
        out["ewt"] = _patch_error(anomaly, obs, w, patch, valid, n_patches) * W["ewt"]
    if on["vod"]:
        obs, w = lab("vod")
        out["vod"] = _sse(_annual(cut("vod"), spy).mean(2), _annual(obs, spy).mean(2),
                          jnp.prod(_annual(w, spy), axis=2)) * W["vod"]
    if on["violation"]:
        out["violation"] = jnp.sum(series["violation"] * v2) * W["violation"]
    if on["edc"]:
        _, lai_w = _label(labels, "lai")
        edc = _edc(series, totals, initial_pools, cfg.epsilon, spy)
        out["edc"] = jnp.sum(edc * lai_w[:, 0] * valid) * W["edc"]
    return out


def total_loss(terms: Mapping[str, jax.Array]) -> jax.Array:
    return sum(terms.values())


def stream_of_term(term: str) -> str | None:
    return TERMS[term][0]


assert set(s for s, _ in TERMS.values() if s) <= set(STREAM_NAMES)
