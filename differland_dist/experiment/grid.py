"""The experiment grid: predictor sets × ensemble members, and the calibration config of each.

An experiment config (YAML) names a base calibration config and the grid::

    name: paper
    base: global_gpu.yaml            # a calibration config, relative to this file
    set: [training.steps=2000]       # --set overrides applied to the base
    predictor_sets:                  # default: the paper's seven
      - [PFT]
      - [PFT, CLIM, SOIL, AGE]
      - {predictors: [LATLON], set: [network.width=64]}   # per-set overrides
    members: 20                      # count (seeds 0..19) or explicit seeds [3, 7, 11]
    vary: [network_seed, patch_order, split_seed]   # or run: the paper's runs seed + 1
    keep_best: 10                    # members kept per set (default: half)
    keep_by: dev_loss                # or train_loss: the last epoch's (the paper's selection)
    resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0}

Every member is an ordinary calibration with its own run directory; what differs between the
members of a set is only what ``vary`` names, drawn from the member's seed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from differland_dist.config import ExperimentConfig, apply_overrides, from_dict, read_yaml
from differland_dist.data.schema import PREDICTOR_SET_ORDER
from differland_dist.errors import ConfigError
from differland_dist.experiment.selection import KEEP_BY
from differland_dist.vocabulary.series import check_series

#: The paper's seven predictor sets, in its order.
PAPER_SETS: tuple[tuple[str, ...], ...] = (
    ("PFT",), ("PFT", "CLIM"), ("PFT", "CLIM", "SOIL"), ("PFT", "CLIM", "SOIL", "AGE"),
    ("CLIM", "SOIL", "AGE"), ("LATLON",), ("CONTROL",))

#: What may vary between the members of a set (each drawn from the member's seed). ``run``:
#: the published partition ``data.run = seed + 1`` of a store imported from the paper's driver
#: (its per-run batch index), so members 0..19 train on the paper's runs 1..20.
VARY = ("network_seed", "patch_order", "split_seed", "run")
DEFAULT_VARY = ("network_seed", "patch_order", "split_seed")


def set_name(predictors: tuple[str, ...]) -> str:
    """``("PFT", "CLIM")`` -> ``"PFT+CLIM"`` (the name used in paths, scores and figures)."""
    return "+".join(predictors)


@dataclass(frozen=True)
class PredictorSet:
    """One row of the grid: predictor set names and overrides of the base config for it."""

    predictors: tuple[str, ...]
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return set_name(self.predictors)


@dataclass(frozen=True)
class Resources:
    """What one member reserves (its workers are placed together, or it waits)."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self):
        if not (isinstance(self.workers, int) and self.workers >= 1):
            raise ConfigError(f"resources.workers: must be an integer >= 1, got {self.workers!r}")
        if not (math.isfinite(self.cpus_per_worker) and self.cpus_per_worker > 0):
            raise ConfigError(f"resources.cpus_per_worker: must be > 0, got {self.cpus_per_worker!r}")
        if not (math.isfinite(self.gpus_per_worker) and self.gpus_per_worker >= 0):
            raise ConfigError(f"resources.gpus_per_worker: must be >= 0, got {self.gpus_per_worker!r}")


@dataclass(frozen=True)
class Member:
    """One calibration of the grid."""

    set: PredictorSet
    seed: int

    @property
    def key(self) -> str:
        """``<set>/m<seed>``: the member's name and its run directory under ``members/``."""
        return f"{self.set.name}/m{self.seed:03d}"


@dataclass(frozen=True)
class GridConfig:
    """The experiment: a base calibration config and the grid over it (see the module doc)."""

    base: ExperimentConfig
    name: str = "experiment"
    predictor_sets: tuple[PredictorSet, ...] = tuple(PredictorSet(p) for p in PAPER_SETS)
    seeds: tuple[int, ...] = tuple(range(20))
    vary: tuple[str, ...] = DEFAULT_VARY
    keep_best: int = 10
    keep_by: str = "dev_loss"
    resources: Resources = field(default_factory=Resources)
    inference: bool = True
    ensemble_series: tuple[str, ...] = ("gpp", "nee", "nbe", "et", "lai", "sif")

    def __post_init__(self):
        if not self.predictor_sets:
            raise ConfigError("predictor_sets: at least one set is needed")
        names = [s.name for s in self.predictor_sets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"predictor_sets: {dup} listed twice")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"members: need distinct seeds >= 0, got {list(self.seeds)}")
        bad = [v for v in self.vary if v not in VARY]
        if bad:
            raise ConfigError(f"vary: unknown {bad}; choose from {list(VARY)}")
        if {"run", "split_seed"} <= set(self.vary):
            raise ConfigError("vary: run and split_seed both choose a member's train/dev "
                              "partition; name one of them")
        if not 1 <= self.keep_best <= len(self.seeds):
            raise ConfigError(f"keep_best: must be in 1..{len(self.seeds)} (the members per set), "
                              f"got {self.keep_best}")
        if self.keep_by not in KEEP_BY:
            raise ConfigError(f"keep_by: expected one of {list(KEEP_BY)}, got {self.keep_by!r}")
        if self.keep_by == "dev_loss" and self.base.data.train_on != "train":
            raise ConfigError(f"keep_by: dev_loss needs a dev set, but base data.train_on is "
                              f"{self.base.data.train_on!r}; use keep_by: train_loss")
        for s in self.predictor_sets:
            member_config(self, Member(s, self.seeds[0]))  # every set's config must validate

    @property
    def members(self) -> tuple[Member, ...]:
        """Every member, set by set (the order in which they are queued)."""
        return tuple(Member(s, seed) for s in self.predictor_sets for seed in self.seeds)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, saved as ``experiment.yaml`` in the experiment directory (the base
        config inline, with storage options left out)."""
        base = self.base.to_dict()
        return {"name": self.name, "base": base,
                "predictor_sets": [{"predictors": list(s.predictors), "set": list(s.overrides)}
                                   for s in self.predictor_sets],
                "members": list(self.seeds), "vary": list(self.vary), "keep_best": self.keep_best,
                "keep_by": self.keep_by,
                "resources": dataclasses.asdict(self.resources), "inference": self.inference,
                "ensemble_series": list(self.ensemble_series)}


def member_config(grid: GridConfig, member: Member) -> ExperimentConfig:
    """The calibration config of one member: the base, the set's predictors and overrides,
    the member's seeds for what ``vary`` names, and the grid's resources per member."""
    base = grid.base
    d = base.to_dict()
    d["data"]["storage_options"] = dict(base.data.storage_options)
    d = apply_overrides(d, list(member.set.overrides))
    d["name"] = f"{grid.name}/{member.key}"
    d["data"]["predictors"] = list(member.set.predictors)
    if "network_seed" in grid.vary:
        d["training"]["seed"] = member.seed
    if "patch_order" in grid.vary:
        d["training"]["order_seed"] = member.seed
    if "split_seed" in grid.vary:
        d["data"]["split_seed"] = member.seed
    if "run" in grid.vary:
        d["data"]["run"] = member.seed + 1
    r = grid.resources
    d["ray"].update(workers=r.workers, cpus_per_worker=r.cpus_per_worker,
                    gpus_per_worker=r.gpus_per_worker)
    try:
        return from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"predictor set {member.set.name}: {e}") from None


#: The experiment config's keys (YAML) and what each holds; the loader accepts these only, and
#: docs/config.md lists them (``differland_dist.config_reference``).
KEYS: dict[str, str] = {
    "name": "the experiment's name (no '/'); default experiment",
    "base": "the base calibration config: a path relative to this file, or an inline mapping "
            "(required)",
    "set": "--set overrides (key=value strings) applied to the base config",
    "predictor_sets": "rows of the grid: lists of predictor set names, or {predictors: [...], "
                      "set: [key=value, ...]} with overrides for that set; default the paper's "
                      "seven",
    "members": "members per set: a count (seeds 0..n-1) or a list of seeds; default 20",
    "vary": f"what differs between a set's members, drawn from each seed: any of {list(VARY)} "
            f"(run and split_seed exclude each other); default {list(DEFAULT_VARY)}",
    "keep_best": "members kept per set by dev loss for the ensemble; default half the members",
    "resources": "what one member reserves: {workers, cpus_per_worker, gpus_per_worker}; "
                 "default {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0}",
    "keep_by": "how kept members are ranked: dev_loss (default) or train_loss (the last epoch's summed training loss, as the paper keeps the best converged)",
    "inference": "after training, infer the kept members and build ensemble.zarr and "
                 "scores.json; default true",
    "ensemble_series": "output series kept in ensemble.zarr; default [gpp, nee, nbe, et, lai, sif]",
}


def _predictor_set(item: Any, i: int) -> PredictorSet:
    where = f"predictor_sets[{i}]"
    if isinstance(item, str):
        item = [item]
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"predictors", "set"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: ['predictors', 'set']")
        preds, overrides = item.get("predictors"), item.get("set") or []
    else:
        preds, overrides = item, []
    if not isinstance(preds, (list, tuple)) or not preds or not all(isinstance(p, str) for p in preds):
        raise ConfigError(f"{where}: expected a list of predictor set names, got {preds!r}")
    bad = [p for p in preds if p not in PREDICTOR_SET_ORDER]
    if bad:
        raise ConfigError(f"{where}: unknown predictor set(s) {bad}; choose from {list(PREDICTOR_SET_ORDER)}")
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{where}.set: expected a list of key=value strings, got {overrides!r}")
    return PredictorSet(tuple(preds), tuple(overrides))


def grid_from_dict(d: Mapping[str, Any], base_dir: Path | None = None,
                   overrides: list[str] | None = None) -> GridConfig:
    """Validate an experiment mapping (from YAML or ``experiment.yaml``) into a GridConfig.

    ``base`` is a path (relative to ``base_dir``) or an inline calibration mapping;
    ``overrides`` (``--set``) apply to the experiment's keys (``keep_best=3``) or, with a
    ``base.`` prefix, to the base config (``base.training.steps=50``)."""
    if not isinstance(d, Mapping):
        raise ConfigError("experiment config: expected a mapping at the top level")
    d = apply_overrides(dict(d), [o for o in overrides or [] if not o.startswith("base.")])
    unknown = sorted(set(d) - set(KEYS))
    if unknown:
        raise ConfigError(f"experiment config: unknown key(s) {unknown}; known: {sorted(KEYS)}")
    base_src = d.get("base")
    if isinstance(base_src, str):
        path = Path(base_src)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.exists():
            raise ConfigError(f"base: calibration config not found: {path}")
        base_d = read_yaml(path)
    elif isinstance(base_src, Mapping):
        base_d = dict(base_src)
    else:
        raise ConfigError("base: expected the path of a calibration config or a mapping, got "
                          f"{base_src!r}")
    base_set = d.get("set") or []
    if isinstance(base_set, str) or not all(isinstance(o, str) for o in base_set):
        raise ConfigError(f"set: expected a list of key=value strings, got {base_set!r}")
    base_over = list(base_set) + [o[len("base."):] for o in overrides or [] if o.startswith("base.")]
    base = from_dict(apply_overrides(base_d, base_over))
    members = d.get("members", 20)
    if isinstance(members, bool) or not isinstance(members, (int, list, tuple)):
        raise ConfigError(f"members: expected a count or a list of seeds, got {members!r}")
    if isinstance(members, int):
        if members < 1:
            raise ConfigError(f"members: must be >= 1, got {members}")
        seeds = tuple(range(members))
    else:
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in members):
            raise ConfigError(f"members: seeds must be integers, got {members!r}")
        seeds = tuple(members)
    sets = d.get("predictor_sets")
    psets = (tuple(PredictorSet(p) for p in PAPER_SETS) if sets is None else
             tuple(_predictor_set(s, i) for i, s in enumerate(sets)))
    keep = d.get("keep_best")
    if keep is None:
        keep = max(1, len(seeds) // 2)
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise ConfigError(f"keep_best: expected an integer, got {keep!r}")
    res = d.get("resources") or {}
    if not isinstance(res, Mapping):
        raise ConfigError(f"resources: expected a mapping, got {res!r}")
    unknown = sorted(set(res) - {f.name for f in dataclasses.fields(Resources)})
    if unknown:
        raise ConfigError(f"resources: unknown key(s) {unknown}")
    try:
        resources = Resources(**{k: (float(v) if k != "workers" else v) for k, v in res.items()})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"resources: {e}") from None
    vary = d.get("vary", list(DEFAULT_VARY))
    series = d.get("ensemble_series", ["gpp", "nee", "nbe", "et", "lai", "sif"])
    name = d.get("name", "experiment")
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"name: expected a non-empty string without '/', got {name!r}")
    inference = d.get("inference", True)
    if not isinstance(inference, bool):
        raise ConfigError(f"inference: expected true/false, got {inference!r}")

    return GridConfig(base=base, name=name, predictor_sets=psets, seeds=seeds,
                      vary=tuple(vary), keep_best=keep, keep_by=d.get("keep_by", "dev_loss"),
                      resources=resources,
                      inference=inference, ensemble_series=tuple(check_series(series)))


def load_grid(path: str | Path, overrides: list[str] | None = None) -> GridConfig:
    """The one loader of experiment configs (YAML file, then ``--set`` overrides)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"experiment config not found: {p}")
    try:
        return grid_from_dict(read_yaml(p), p.parent, overrides)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
