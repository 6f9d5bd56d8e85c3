"""The synthetic Earth's hidden predictor -> parameter relation, designed as data.

A *truth design* (YAML, ``differland synth --truth FILE.yaml``; the shipped ones are
``configs/truths/*.yaml``) says how the 40 unbounded DALEC parameters follow the 20 predictors.
Two kinds:

``kind: network``  a random one-hidden-layer network of all 20 predictors (``hidden`` units)
  with small amplitudes per parameter kind (``amplitude: {process, phenology, pools}``).

``kind: latents``  named latent gradients, each ``tanh(sum_f weight_f * z_f + offset)`` of the
  standardised predictors ``z_f = (F_f - centre_f) / scale_f`` (:data:`FEATURE_SCALING`);
  every listed parameter follows its ``drivers`` (latent -> loading) with the spatial sd
  ``log_sd`` of the natural log of its physical value; unlisted (minor) parameters vary by
  ``minor_log_sd`` over random loadings on all latents; every listed parameter also loads
  ``N(0, mix_sd)`` on the latents it does not name (random mixing). ``latent_sd`` is the
  typical spatial sd of a latent, used to turn log-sds into loadings.

Both become a :class:`Truth` (one hidden layer: ``x = b2 + tanh(z @ w1 + b1) @ w2``), drawn from
the ``[seed, TRUTH_STREAM]`` random stream, so a design and a seed give the same truth on every
grid. :func:`random_structured_design` draws latent designs whose true PFT share ranges from
PFT-free to PFT-only (``--truth random-structured``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import yaml

from differland_dist.config import read_yaml
from differland_dist.data import schema
from differland_dist.errors import ConfigError, DifferlandError
from differland_dist.synthetic.fields import RNG_TRUTH
from differland_dist.vocabulary.parameters import (
    PARAM_NAMES, PARAMETERS, PHENOLOGY_PARAMETERS, POOLS, PROCESS_PARAMETERS, all_bounds,
    to_unbounded)

#: The 20 predictors of the paper's full set, inputs of the hidden relation.
TRUTH_FEATURES = schema.PREDICTOR_SETS["PFT"] + schema.PREDICTOR_SETS["CLIM"] + \
    schema.PREDICTOR_SETS["AGE"] + schema.PREDICTOR_SETS["SOIL"]
#: Fixed (centre, scale) standardising each truth feature: the relation does not depend on
#: the grid or on which pixels exist.
FEATURE_SCALING = {
    **{n: (0.1, 0.2) for n in schema.PREDICTOR_SETS["PFT"]},
    "MAT": (10.0, 12.0), "MAP": (900.0, 700.0), "elevation": (600.0, 700.0),
    "canopy_height": (8.0, 10.0), "forest_age": (80.0, 50.0), "BULK_DEN": (1.35, 0.2),
    "SAND": (40.0, 15.0), "SILT": (35.0, 10.0), "CLAY": (25.0, 10.0), "GRAVEL": (15.0, 8.0),
}
#: The truth's 40 parameters: the parameter table's names and units (network-head order).
PARAM_NAMES_ALL = PARAM_NAMES
PARAM_UNITS_ALL = tuple(b.units for b in PARAMETERS)
#: The synthetic Earth's random-stream purpose of the truth (synthetic/fields.py numbers its
#: streams; never change: it changes every store).
TRUTH_STREAM = RNG_TRUTH
#: The stream :func:`random_structured_design` draws designs from (not used by the Earth).
DESIGN_STREAM = 100

#: Central physical values of the hidden relation (typical DALEC values).
BASE_VALUES = {
    "decomposition_rate": 0.001, "f_gpp": 0.45, "f_fol": 0.2, "f_root": 0.35,
    "leaf_lifespan": 1.5, "tor_wood": 1e-4, "tor_root": 0.002, "tor_litter": 0.002,
    "tor_som": 3e-5, "Q10": 0.04, "canopy_efficiency": 20.0, "flab": 0.1,
    "clab_release_period": 45.0, "leaf_fall_period": 60.0, "LCMA": 85.0, "IWUE": 25.0,
    "runoff_focal_point": 3000.0, "field_capacity": 250.0, "foliar_cf": 0.5,
    "ligneous_cf": 0.2, "dom_cf": 0.3, "resilience": 0.3, "lab_lifespan": 1.3,
    "moisture_factor": 0.3, "uWUE": 8.0, "boese_r": 0.02, "wilting_point_frac": 0.15,
    "sif_alpha": 12.0, "sif_beta_plus_three": 3.5, "p_fol": 0.003, "p_wood": 1e-5,
    "init_labile": 80.0, "init_foliar": 100.0, "init_root": 200.0, "init_wood": 4000.0,
    "init_litter": 300.0, "init_som": 8000.0, "init_water": 200.0,
}
#: Leaf-onset and leaf-fall day of year in the northern hemisphere (south: half a year later).
ONSET_DOY, FALL_DOY = 120.0, 290.0

#: Where the shipped designs live (``configs/truths`` links here).
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "configs" / "truths"
#: Generated designs: ``--truth random-structured`` (with ``--seed``).
GENERATED = ("random-structured",)


class Truth(NamedTuple):
    """x = b2 + tanh(((pred - centre) / scale) @ w1 + b1) @ w2 (40 unbounded parameters);
    b2 holds the central values, the phenology ones shifted by half a year in the south."""

    centre: np.ndarray  # (20,)
    scale: np.ndarray   # (20,)
    w1: np.ndarray      # (20, H)
    b1: np.ndarray      # (H,)
    w2: np.ndarray      # (H, 40), amplitude included
    b2: np.ndarray      # (40,) central unbounded values (northern hemisphere)
    b2_south: np.ndarray  # (40,) same for southern-hemisphere pixels


@dataclass(frozen=True)
class Latent:
    weights: dict[str, float]   # truth feature -> weight on its standardised value
    offset: float


@dataclass(frozen=True)
class Driven:
    drivers: dict[str, float]   # latent -> loading (normalised with the mixing)
    log_sd: float               # spatial sd of ln(physical value)


@dataclass(frozen=True)
class TruthDesign:
    """A validated truth design (see the module docstring for the two kinds)."""

    name: str
    kind: str                                   # "network" or "latents"
    hidden: int = 0                             # network
    amplitude: tuple[float, float, float] = (0.0, 0.0, 0.0)  # network: process, phenology, pools
    latents: dict[str, Latent] | None = None    # latents
    parameters: dict[str, Driven] | None = None
    minor_log_sd: float = 0.0
    mix_sd: float = 0.0
    latent_sd: float = 0.6

    def to_dict(self) -> dict:
        """The design as the YAML mapping it was read from (canonical order)."""
        if self.kind == "network":
            return {"name": self.name, "kind": "network", "hidden": self.hidden,
                    "amplitude": dict(zip(("process", "phenology", "pools"), self.amplitude))}
        return {"name": self.name, "kind": "latents", "latent_sd": self.latent_sd,
                "minor_log_sd": self.minor_log_sd, "mix_sd": self.mix_sd,
                "latents": {k: {"weights": dict(v.weights), "offset": v.offset}
                            for k, v in self.latents.items()},
                "parameters": {k: {"drivers": dict(v.drivers), "log_sd": v.log_sd}
                               for k, v in self.parameters.items()}}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# -- reading and checking -------------------------------------------------------------------
def _keys(d: Any, where: str, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - required - set(optional))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (expected "
                          f"{', '.join(sorted(required | set(optional)))})")
    missing = sorted(required - set(d))
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: missing")
    return dict(d)


def _num(v: Any, where: str, lo: float = -math.inf, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{where}: expected a finite number, got {v!r}")
    if v < lo or (positive and v <= 0):
        raise ConfigError(f"{where}: expected {'> 0' if positive else f'>= {lo:g}'}, got {v!r}")
    return float(v)


def design_from_dict(d: Mapping, source: str = "truth design") -> TruthDesign:
    """Validate a design mapping; ConfigError naming the offending key (``source.key``)."""
    top = _keys(d, source, {"name", "kind"},
                {"hidden", "amplitude", "latent_sd", "minor_log_sd", "mix_sd", "latents", "parameters"})
    name, kind = str(top["name"]), top["kind"]
    if kind == "network":
        _keys(top, source, {"name", "kind", "hidden", "amplitude"})
        h = top["hidden"]
        if isinstance(h, bool) or not isinstance(h, int) or h < 1:
            raise ConfigError(f"{source}.hidden: expected an integer >= 1, got {h!r}")
        a = _keys(top["amplitude"], f"{source}.amplitude", {"process", "phenology", "pools"})
        amp = tuple(_num(a[k], f"{source}.amplitude.{k}", 0.0) for k in ("process", "phenology", "pools"))
        return TruthDesign(name, "network", hidden=h, amplitude=amp)
    if kind != "latents":
        raise ConfigError(f"{source}.kind: expected 'network' or 'latents', got {kind!r}")
    _keys(top, source, {"name", "kind", "latents", "parameters"}, {"latent_sd", "minor_log_sd", "mix_sd"})
    lat_raw = top["latents"]
    if not isinstance(lat_raw, Mapping) or not lat_raw:
        raise ConfigError(f"{source}.latents: expected a non-empty mapping of latent gradients")
    latents = {}
    for ln, spec in lat_raw.items():
        w = f"{source}.latents.{ln}"
        s = _keys(spec, w, {"weights"}, {"offset"})
        if not isinstance(s["weights"], Mapping) or not s["weights"]:
            raise ConfigError(f"{w}.weights: expected a non-empty mapping predictor -> weight")
        for f in s["weights"]:
            if f not in TRUTH_FEATURES:
                raise ConfigError(f"{w}.weights.{f}: unknown predictor (expected one of "
                                  f"{', '.join(TRUTH_FEATURES)})")
        latents[str(ln)] = Latent({f: _num(v, f"{w}.weights.{f}") for f, v in s["weights"].items()},
                                  _num(s.get("offset", 0.0), f"{w}.offset"))
    par_raw = top["parameters"]
    if not isinstance(par_raw, Mapping):
        raise ConfigError(f"{source}.parameters: expected a mapping parameter -> drivers")
    params = {}
    for pn, spec in par_raw.items():
        w = f"{source}.parameters.{pn}"
        if pn not in PARAM_NAMES_ALL:
            raise ConfigError(f"{w}: unknown parameter (expected one of {', '.join(PARAM_NAMES_ALL)})")
        s = _keys(spec, w, {"drivers", "log_sd"})
        if not isinstance(s["drivers"], Mapping) or not s["drivers"]:
            raise ConfigError(f"{w}.drivers: expected a non-empty mapping latent -> loading")
        for ln in s["drivers"]:
            if ln not in latents:
                raise ConfigError(f"{w}.drivers.{ln}: unknown latent (the design's: {', '.join(latents)})")
        drv = {ln: _num(v, f"{w}.drivers.{ln}") for ln, v in s["drivers"].items()}
        if not any(drv.values()):
            raise ConfigError(f"{w}.drivers: every loading is 0")
        params[str(pn)] = Driven(drv, _num(s["log_sd"], f"{w}.log_sd", 0.0))
    return TruthDesign(name, "latents", latents=latents, parameters=params,
                       minor_log_sd=_num(top.get("minor_log_sd", 0.04), f"{source}.minor_log_sd", 0.0),
                       mix_sd=_num(top.get("mix_sd", 0.25), f"{source}.mix_sd", 0.0),
                       latent_sd=_num(top.get("latent_sd", 0.6), f"{source}.latent_sd", positive=True))


def shipped_designs() -> tuple[str, ...]:
    """Names of the designs in ``configs/truths`` (file stems), sorted."""
    return tuple(sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml")))


def load_design(spec: str, seed: int = 0, what: str = "--truth") -> TruthDesign:
    """A design by shipped name (``structured``), generator name (``random-structured``, drawn
    from ``seed``) or path of a YAML file; DifferlandError naming ``what`` otherwise."""
    if spec in GENERATED:
        return random_structured_design(seed)
    if spec in shipped_designs():
        return design_from_dict(read_yaml(SHIPPED_DIR / f"{spec}.yaml"), f"{spec}.yaml")
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        if not Path(spec).exists():
            raise DifferlandError(f"{what} {spec}: truth design file not found")
        return design_from_dict(read_yaml(spec), spec)
    raise DifferlandError(f"{what} {spec!r}: expected a design file (.yaml) or one of "
                          f"{', '.join(shipped_designs() + GENERATED)}")


# -- building the truth ---------------------------------------------------------------------
def central_values(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unbounded central values (north, south): south's phenology half a year later."""
    base = np.array([BASE_VALUES.get(k, np.nan) for k in PARAM_NAMES_ALL])
    north, south = base.copy(), base.copy()
    i_b, i_f = PARAM_NAMES_ALL.index("Bday"), PARAM_NAMES_ALL.index("Fday")
    north[i_b], north[i_f] = 365.25 + ONSET_DOY, 365.25 + FALL_DOY
    south[i_b], south[i_f] = 365.25 + ONSET_DOY + 182.6, 365.25 + FALL_DOY + 182.6
    return to_unbounded(north, lo, hi), to_unbounded(south, lo, hi)


def build_truth(design: TruthDesign, seed: int) -> Truth:
    """The :class:`Truth` of ``design`` drawn from the ``[seed, TRUTH_STREAM]`` stream."""
    rng = np.random.default_rng([int(seed), TRUTH_STREAM])
    lo, hi = all_bounds()
    nf, n = len(TRUTH_FEATURES), len(PARAM_NAMES_ALL)
    centre = np.array([FEATURE_SCALING[k][0] for k in TRUTH_FEATURES])
    scale = np.array([FEATURE_SCALING[k][1] for k in TRUTH_FEATURES])
    north, south = central_values(lo, hi)
    if design.kind == "network":
        w1 = rng.normal(0.0, 1.0 / math.sqrt(nf), size=(nf, design.hidden))
        b1 = rng.normal(0.0, 0.5, size=design.hidden)
        n_proc, n_ph = len(PROCESS_PARAMETERS), len(PHENOLOGY_PARAMETERS)
        a_proc, a_ph, a_pool = design.amplitude
        amp = np.array([a_proc] * n_proc + [a_ph] * n_ph + [a_pool] * len(POOLS))
        w2 = rng.normal(0.0, 1.0 / math.sqrt(design.hidden), size=(design.hidden, n)) * amp
        return Truth(centre, scale, w1, b1, w2, north, south)
    feats = list(TRUTH_FEATURES)
    latents = list(design.latents)
    w1 = np.zeros((nf, len(latents)))
    b1 = np.zeros(len(latents))
    for h, lat in enumerate(design.latents.values()):
        for f, w in lat.weights.items():
            w1[feats.index(f), h] = w
        b1[h] = lat.offset
    mix = rng.normal(0.0, design.mix_sd, size=(len(latents), n))
    w2 = np.zeros((len(latents), n))
    for j, name in enumerate(PARAM_NAMES_ALL):
        # d ln(p)/dx of the bounded transform at the central value: a log-sd -> unbounded sd
        x0 = north[j]
        slope = math.log(hi[j] / lo[j]) / (math.pi * (1.0 + x0 * x0))
        if name in design.parameters:
            spec = design.parameters[name]
            load, log_sd = mix[:, j].copy(), spec.log_sd
            for latent, w in spec.drivers.items():
                load[latents.index(latent)] = w
        else:
            load, log_sd = rng.normal(0.0, 1.0, size=len(latents)), design.minor_log_sd
        w2[:, j] = load / np.linalg.norm(load) * log_sd / (design.latent_sd * slope)
    return Truth(centre, scale, w1, b1, w2, north, south)


def apply_truth(truth: Truth, features: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """(P, 40) unbounded true parameters from (P, 20) raw features."""
    z = (features.astype(np.float64) - truth.centre) / truth.scale
    h = np.tanh(z @ truth.w1 + truth.b1)
    b2 = np.where((lat >= 0)[:, None], truth.b2, truth.b2_south)
    return b2 + h @ truth.w2


# -- random designs -------------------------------------------------------------------------
#: Parameters a random structured design drives (the structured design's: the ones the
#: synthetic streams see), and the predictors each kind of latent draws on.
RANDOM_PARAMETERS = ("Bday", "Fday", "leaf_fall_period", "clab_release_period", "Q10",
                     "leaf_lifespan", "f_fol", "LCMA", "canopy_efficiency", "uWUE", "sif_alpha",
                     "f_gpp", "field_capacity", "runoff_focal_point", "wilting_point_frac",
                     "moisture_factor", "init_wood", "tor_wood", "init_som", "tor_som", "boese_r",
                     "IWUE")
_ENV_LATENTS = {"temperature": ("MAT", "elevation"), "water": ("MAP",),
                "soil": tuple(schema.PREDICTOR_SETS["SOIL"]), "stand": ("forest_age", "canopy_height")}
#: The golden-ratio step that spreads the seeds' PFT weights over [0, 1).
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def design_pft_weight(seed: int) -> float:
    """The PFT weight of ``random_structured_design(seed)``: frac(seed x 0.618...), so any
    five consecutive seeds cover [0, 1) in steps of at most ~0.38 and seeds 0-12 in ~0.09."""
    return float((int(seed) * _GOLDEN) % 1.0)


def random_structured_design(seed: int, pft_weight: float | None = None) -> TruthDesign:
    """A random latent design: two PFT latents (random weights on three or four PFT fractions),
    one latent each for temperature, water, soil and stand (random weights on their
    predictors); each of :data:`RANDOM_PARAMETERS` loads on one PFT and one environmental
    latent, with squared PFT loading share ``w_j = clip(pft_weight + N(0, 0.1), 0, 1)``, log-sd
    U(0.15, 0.4) (dates: U(0.02, 0.04)); mixing sd 0.1, minor log-sd 0.04.

    ``pft_weight`` (the design's intended share of PFT-driven variance; default
    :func:`design_pft_weight`) sets how strongly the design follows PFTs; the *measured* PFT
    share also depends on how well PFTs predict the environment in the geography
    (``--pft-climate-coupling``; docs/data.md)."""
    rng = np.random.default_rng([int(seed), DESIGN_STREAM])
    w = design_pft_weight(seed) if pft_weight is None else float(pft_weight)
    if not 0.0 <= w <= 1.0:
        raise DifferlandError(f"pft_weight must be in [0, 1], got {w}")
    pfts = list(schema.PREDICTOR_SETS["PFT"])
    latents: dict[str, Latent] = {}
    for k in range(2):
        chosen = rng.choice(pfts, size=int(rng.integers(3, 5)), replace=False)
        latents[f"pft_{k + 1}"] = Latent({str(f): round(float(rng.normal(0.0, 0.5)), 3) for f in chosen},
                                         round(float(rng.normal(0.0, 0.2)), 3))
    for name, feats in _ENV_LATENTS.items():
        wts = rng.normal(0.0, 1.0, size=len(feats))
        wts = 0.8 * wts / np.linalg.norm(wts)  # a latent of ~unit-sd predictors: sd ~0.8 before tanh
        latents[name] = Latent({f: round(float(v), 3) for f, v in zip(feats, wts)},
                               round(float(rng.normal(0.0, 0.2)), 3))
    env = list(_ENV_LATENTS)
    params = {}
    for p in RANDOM_PARAMETERS:
        wj = float(np.clip(w + rng.normal(0.0, 0.1), 0.0, 1.0))
        a = math.sqrt(wj) * (1.0 if rng.uniform() < 0.5 else -1.0)
        b = math.sqrt(1.0 - wj) * (1.0 if rng.uniform() < 0.5 else -1.0)
        drivers = {f"pft_{int(rng.integers(1, 3))}": round(a, 3), str(rng.choice(env)): round(b, 3)}
        drivers = {k: v for k, v in drivers.items() if v != 0.0} or {"pft_1": 1.0}
        sd = rng.uniform(0.02, 0.04) if p in ("Bday", "Fday") else rng.uniform(0.15, 0.4)
        params[p] = Driven(drivers, round(float(sd), 3))
    return TruthDesign(f"random-structured-{int(seed)}-pft{w:.2f}", "latents", latents=latents,
                       parameters=params, minor_log_sd=0.04, mix_sd=0.1, latent_sd=0.6)
