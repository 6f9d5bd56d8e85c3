"""The experiment configuration: typed, validated, frozen; one loader for YAML files,
``--set key=value`` overrides and the copy saved in every checkpoint.

An unknown key anywhere is an error that names it, and so is a key given twice in a YAML
mapping. Every value is type- and range-checked when the config is built, with the full
dotted key in the message (``training.seed: must be in [0, 4294967295], got -1``), so a bad
value fails before any store is read or cluster started. :func:`check_against_store` checks
the values that must fit the data (e.g. ``loss.warm_up`` against the store's time steps).

YAML is read by one loader (:func:`read_yaml`, :func:`parse_override`) that also takes
exponent numbers without a dot (``1e-3``, which PyYAML's YAML 1.1 rules leave a string) as
numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from differland_dist.common import checks
from differland_dist.data.schema import PREDICTOR_SET_ORDER, STREAMS
from differland_dist.errors import ConfigError
from differland_dist.loss.terms import ANNUAL_TERMS, TERMS, LossConfig
from differland_dist.model.config import ModelConfig
from differland_dist.network.mlp import NetworkConfig
from differland_dist.storage.location import Location

DEFAULT_PRODUCTS = {s.name: (None if s.name == "vod" else s.default_product) for s in STREAMS}

#: JAX platform names a worker may be given (``ray.jax_platforms``, comma-separated).
JAX_PLATFORMS = ("cpu", "cuda", "gpu", "rocm", "tpu", "metal")
#: TPU chips per actor that Ray accepts.
TPU_CHIP_COUNTS = (1, 2, 4, 8)
#: Ray's smallest fractional resource quantity.
RAY_RESOURCE_UNIT = 1e-4
#: What ``data.train_on`` may name (data.splits.for_training applies it).
TRAIN_ON = ("train", "train+dev")
#: ``training.on_nonfinite`` policies (distributed.policy.on_nonfinite decides).
ON_NONFINITE = ("skip", "reduce_lr", "rollback", "reinitialise")
#: ``training.patch_order``: a seeded permutation per epoch, or the split's order every epoch
#: (the published loop: one batch per index value, in index order).
PATCH_ORDERS = ("shuffled", "fixed")
#: Largest training.seed: JAX's 32-bit PRNG keys would map larger seeds onto smaller ones.
MAX_SEED = 2**32 - 1


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class DataConfig:
    """Where the pixels are and which inputs and observation products are used."""

    url: str = ""  # the pixel store: a local path or gs://, s3:// URL
    #: fsspec options of the store (never saved in a run)
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    #: predictor sets; a single string is a comma-separated list (``--set data.predictors=PFT``)
    predictors: tuple[str, ...] = ("PFT", "CLIM", "SOIL", "AGE")
    #: stream -> product variable (``obs_<product>`` in the store), or None to switch it off
    products: Mapping[str, str | None] = field(default_factory=lambda: dict(DEFAULT_PRODUCTS))
    cache: str | None = None   # None, "memory" or a local directory
    #: bytes of decoded, padded patches a training worker keeps (LRU); it streams the rest
    cache_bytes: int = 2 * 1024**3
    #: draw this run's own train/dev partition of the store's non-test patches with this seed
    #: (an experiment member's "run"); None: the store's split as written
    split_seed: int | None = None
    #: with split_seed: the share of the non-test patches that go to dev (None: the store's)
    dev_fraction: float | None = None
    #: published run (1..100) whose train/dev/test partition to use, from the store's per-run
    #: batch index (stores of `differland import-netcdf`); None: the store's split as written
    run: int | None = None
    #: which patches train: "train" (dev scores and selects), or "train+dev" (the final runs
    #: of the paper's SHAP, ``compute_shap.py -d``: dev trains too, no dev loss; test stays out)
    train_on: str = "train"

    def __post_init__(self):
        checks.string("data.url", self.url)
        checks.choice("data.train_on", self.train_on, TRAIN_ON)
        if self.split_seed is not None:
            _set(self, "split_seed", checks.integer("data.split_seed", self.split_seed, 0, MAX_SEED))
        if self.run is not None:
            _set(self, "run", checks.integer("data.run", self.run, 1))
        if self.dev_fraction is not None:
            if self.split_seed is None:
                raise ConfigError("data.dev_fraction: only used with data.split_seed (set both)")
            _set(self, "dev_fraction", checks.number("data.dev_fraction", self.dev_fraction, 0, 1,
                                                     hi_open=True))
        _set(self, "storage_options", checks.mapping("data.storage_options", self.storage_options))
        preds = self.predictors
        if isinstance(preds, str):
            preds = [p.strip() for p in preds.split(",") if p.strip()]
        if not isinstance(preds, (list, tuple)):
            raise ConfigError(f"data.predictors: expected a list of predictor sets, got {preds!r}")
        preds = tuple(preds)
        bad = [p for p in preds if p not in PREDICTOR_SET_ORDER]
        if bad or not preds:
            raise ConfigError(f"data.predictors: unknown set(s) {bad}; choose from {list(PREDICTOR_SET_ORDER)}")
        twice = sorted({p for p in preds if preds.count(p) > 1})
        if twice:
            raise ConfigError(f"data.predictors: {twice} listed more than once, got {list(preds)}")
        _set(self, "predictors", preds)
        products = checks.mapping("data.products", self.products)
        unknown = set(products) - set(DEFAULT_PRODUCTS)
        if unknown:
            raise ConfigError(f"data.products: unknown stream(s) {sorted(unknown)}; streams: {list(DEFAULT_PRODUCTS)}")
        for stream, product in products.items():
            if product is not None:
                checks.string(f"data.products.{stream}", product, empty=False)
        _set(self, "products", {**DEFAULT_PRODUCTS, **products})
        _set(self, "cache_bytes", checks.integer("data.cache_bytes", self.cache_bytes, 0))
        if self.cache is not None:
            checks.string("data.cache", self.cache, empty=False)
            if "://" in self.cache:  # decoded chunks are written with os-level file calls
                raise ConfigError(f"data.cache: must be null, 'memory' or a local directory, got {self.cache!r}")

    @property
    def location(self) -> Location:
        """The store: :attr:`url` reached with :attr:`storage_options`."""
        return Location(self.url, self.storage_options)


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"                 # adam | adamw | sgd
    learning_rate: float = 1e-3  # peak learning rate
    schedule: str = "constant"         # constant | cosine | warmup_cosine
    warmup_steps: int = 0  # linear warm-up steps (warmup_cosine)
    clip_norm: float | None = None     # global-norm clipping
    weight_decay: float = 0.0  # decoupled weight decay (adamw)

    def __post_init__(self):
        checks.choice("optimizer.name", self.name, ("adam", "adamw", "sgd"))
        _set(self, "learning_rate",
             checks.number("optimizer.learning_rate", self.learning_rate, 0, lo_open=True))
        checks.choice("optimizer.schedule", self.schedule, ("constant", "cosine", "warmup_cosine"))
        _set(self, "warmup_steps", checks.integer("optimizer.warmup_steps", self.warmup_steps, 0))
        if self.clip_norm is not None:
            _set(self, "clip_norm", checks.number("optimizer.clip_norm", self.clip_norm, 0, lo_open=True))
        _set(self, "weight_decay", checks.number("optimizer.weight_decay", self.weight_decay, 0))


@dataclass(frozen=True)
class TrainingConfig:
    steps: int | None = 100  # optimizer steps in all (null with training.epochs)
    patches_per_step: int = 8  # training patches whose gradients make one step
    eval_every: int = 10               # held-out evaluation cadence (0: only at the end)
    checkpoint_every: int = 10         # checkpoint cadence (always also at the end)
    seed: int = 0  # network initialisation (and patch order, unless order_seed)
    on_nonfinite: str = "skip"         # skip | reduce_lr | rollback
    max_nonfinite: int = 10            # consecutive non-finite steps before giving up
    lr_reduction: float = 0.5          # factor for reduce_lr
    pixels_per_call: int | None = None  # most padded pixels per compiled call and device (None:
                                       # by platform, see distributed.shard.DEFAULT_PIXELS_PER_CALL;
                                       # fewer where a step's calls fill more evenly: policy.call_rows)
    patches_per_call: int | None = None  # patches per call instead (wins over pixels_per_call)
    order_seed: int | None = None      # seed of the patch order (None: training.seed, which
                                       # also seeds the network's initialisation)
    updates_per_call: int = 1          # K > 1: up to K optimizer updates in one call of the one
                                       # worker (ray.workers=1; distributed/multistep.py)
    keep: str = "last"                 # network.npz: the last step's network, or best_dev: the
                                       # one with the lowest dev loss of the evaluations (early
                                       # stopping without stopping; checkpoints stay the last)
    patch_order: str = "shuffled"      # shuffled | fixed (see PATCH_ORDERS)
    epochs: int | None = None          # the schedule in epochs of the run's own training patches
                                       # (training.steps null): eval_every and checkpoint_every
                                       # then count epochs too; the trainer resolves them to
                                       # steps once the split is known (resolve_epochs)

    def __post_init__(self):
        if self.epochs is not None and self.steps is not None:
            raise ConfigError(f"training.steps: {self.steps} and training.epochs: {self.epochs} both "
                              "given; set one (training.steps=null with epochs)")
        if self.epochs is None and self.steps is None:
            raise ConfigError("training.steps: null needs training.epochs (the schedule in epochs)")
        for name, lo in (("steps", 1), ("patches_per_step", 1), ("eval_every", 0),
                         ("checkpoint_every", 0), ("max_nonfinite", 1), ("patches_per_call", 1),
                         ("pixels_per_call", 1), ("updates_per_call", 1)):
            if getattr(self, name) is None and name in ("patches_per_call", "pixels_per_call", "steps"):
                continue
            _set(self, name, checks.integer(f"training.{name}", getattr(self, name), lo))
        _set(self, "seed", checks.integer("training.seed", self.seed, 0, MAX_SEED))
        if self.order_seed is not None:
            _set(self, "order_seed", checks.integer("training.order_seed", self.order_seed, 0, MAX_SEED))
        checks.choice("training.on_nonfinite", self.on_nonfinite, ON_NONFINITE)
        checks.choice("training.patch_order", self.patch_order, PATCH_ORDERS)
        if self.epochs is not None:
            _set(self, "epochs", checks.integer("training.epochs", self.epochs, 1))
        checks.choice("training.keep", self.keep, ("last", "best_dev"))
        _set(self, "lr_reduction", checks.number("training.lr_reduction", self.lr_reduction, 0, 1,
                                                 lo_open=True, hi_open=True))


def _check_address(address: str) -> None:
    """local | auto | ray://host[:port] | host:port, with a port in 1..65535."""
    if address in ("local", "auto"):
        return
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep and address.startswith("ray://"):
        host, port = rest, ""
    ok = bool(host) and (port == "" and address.startswith("ray://")
                         or port.isdigit() and 1 <= int(port) <= 65535)
    if not ok:
        raise ConfigError(f"ray.address: must be local, auto, ray://host:port or host:port, got {address!r}")


@dataclass(frozen=True)
class RayConfig:
    address: str = "local"             # local | auto | ray://host:port
    workers: int = 2  # Ray training actors
    cpus_per_worker: float = 1.0  # CPUs each actor reserves
    gpus_per_worker: float = 0.0  # GPUs each actor reserves (fractions share a GPU)
    tpus_per_worker: float = 0.0  # TPU chips each actor reserves (1, 2, 4 or 8)
    jax_platforms: str = ""            # "" = cpu unless the worker has GPUs/TPUs
    jax_threads_per_worker: int = 0    # 0 = as many as the CPUs given
    #: Ray runtime environment of the actors (env_vars ...)
    runtime_env: Mapping[str, Any] = field(default_factory=dict)
    max_worker_restarts: int = 3  # replacements of dead actors before the run fails

    def __post_init__(self):
        _check_address(checks.string("ray.address", self.address))
        _set(self, "workers", checks.integer("ray.workers", self.workers, 1))
        cpus = checks.number("ray.cpus_per_worker", self.cpus_per_worker, 0, lo_open=True)
        gpus = checks.number("ray.gpus_per_worker", self.gpus_per_worker, 0)
        for key, v in (("ray.cpus_per_worker", cpus), ("ray.gpus_per_worker", gpus)):
            if 0 < v < RAY_RESOURCE_UNIT:
                raise ConfigError(f"{key}: must be 0 or >= {RAY_RESOURCE_UNIT:g} (Ray's resource "
                                  f"precision), got {v!r}")
        tpus = checks.number("ray.tpus_per_worker", self.tpus_per_worker, 0)
        if tpus and tpus not in TPU_CHIP_COUNTS:
            raise ConfigError(f"ray.tpus_per_worker: must be 0 or a chip count Ray accepts "
                              f"({', '.join(map(str, TPU_CHIP_COUNTS))}), got {tpus!r}")
        _set(self, "cpus_per_worker", cpus)
        _set(self, "gpus_per_worker", gpus)
        _set(self, "tpus_per_worker", tpus)
        checks.string("ray.jax_platforms", self.jax_platforms)
        if self.jax_platforms:  # passed on verbatim as JAX_PLATFORMS: no spaces
            bad = [p for p in self.jax_platforms.split(",") if p not in JAX_PLATFORMS]
            if bad:
                raise ConfigError(f"ray.jax_platforms: unknown platform(s) {bad}; use \"\" or a "
                                  f"comma-separated list of {', '.join(JAX_PLATFORMS)}")
        _set(self, "jax_threads_per_worker",
             checks.integer("ray.jax_threads_per_worker", self.jax_threads_per_worker, 0))
        env = checks.mapping("ray.runtime_env", self.runtime_env)
        if "env_vars" in env:
            env_vars = checks.mapping("ray.runtime_env.env_vars", env["env_vars"])
            for k, v in env_vars.items():
                checks.string(f"ray.runtime_env.env_vars.{k}", v)  # Ray takes strings only
        _set(self, "runtime_env", env)
        _set(self, "max_worker_restarts",
             checks.integer("ray.max_worker_restarts", self.max_worker_restarts, 0))


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "differland"  # the run's name (in its config.yaml and checkpoints)
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self):
        checks.string("name", self.name)

    def loss_for_store(self, steps_per_year: int) -> LossConfig:
        """The loss config with streams whose product is off switched off, and the data's
        steps per year."""
        enabled = dict(self.loss.enabled)
        for term, (stream, _) in TERMS.items():
            if stream is not None and self.data.products.get(stream) is None:
                enabled[term] = False
        return dataclasses.replace(self.loss, enabled=enabled, steps_per_year=int(steps_per_year))

    def to_dict(self) -> dict:
        return _to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_SECTIONS = {f.name: f.type for f in fields(ExperimentConfig)}
_CLASSES = {"data": DataConfig, "network": NetworkConfig, "model": ModelConfig, "loss": LossConfig,
            "optimizer": OptimizerConfig, "training": TrainingConfig, "ray": RayConfig}


def check_against_store(config: ExperimentConfig, n_time: int, steps_per_year: int) -> None:
    """Raise ConfigError, naming the key, for values that cannot fit a store of ``n_time``
    time steps with ``steps_per_year`` steps a year (call it before any long work).

    * ``loss.warm_up`` must leave at least one step for the data terms;
    * the annual terms (biomass, nbe_iav, vod) compare whole years after warm-up: at least
      one must remain, or they would silently contribute nothing;
    * the EDC term compares each year's January pools: the series must hold a whole year,
      or its mean is NaN.

    Terms whose stream has no product (``data.products.<stream>: null``) are off and not
    checked.
    """
    n_time = checks.integer("store time steps", n_time, 1)
    steps_per_year = checks.integer("store steps per year", steps_per_year, 1)
    loss = config.loss_for_store(steps_per_year)
    wu = loss.warm_up
    if wu >= n_time:
        raise ConfigError(f"loss.warm_up: must be less than the store's {n_time} time steps, got {wu}")
    spy = 12 if loss.parity else steps_per_year
    annual = [t for t in ANNUAL_TERMS if loss.enabled[t]]
    if annual and (n_time - wu) // spy < 1:
        raise ConfigError(
            f"loss.warm_up: {wu} leaves {n_time - wu} of the store's {n_time} time steps, less "
            f"than the whole year ({spy} steps) that the annual term(s) {annual} compare; lower "
            f"loss.warm_up or switch them off (loss.enabled.{annual[0]}: false)")
    if loss.enabled["edc"] and n_time < spy:
        raise ConfigError(
            f"loss.enabled.edc: the EDC term compares January pools and needs a whole year "
            f"({spy} steps), the store has {n_time} time steps; switch it off (loss.enabled.edc: false)")


def steps_per_epoch(n_train_patches: int, patches_per_step: int) -> int:
    """Training steps of one epoch over ``n_train_patches``, as
    :func:`differland_dist.distributed.policy.step_patches` deals them (whole steps; with one
    patch per step, as published, every patch once)."""
    n = max(1, int(n_train_patches))
    return max(1, n // max(1, min(int(patches_per_step), n)))


def resolve_epochs(config: ExperimentConfig, n_train_patches: int) -> ExperimentConfig:
    """The config with a schedule in epochs (``training.epochs``) turned into steps for a run
    of ``n_train_patches`` training patches: ``steps`` = epochs x the steps of one epoch, and
    ``eval_every`` / ``checkpoint_every`` (counted in epochs) x the same. A config in steps is
    returned as it is. The number of training patches is the data's (the run's partition), so
    the loader cannot know it; the trainer calls this once the split is known."""
    tc = config.training
    if tc.epochs is None:
        return config
    per = steps_per_epoch(n_train_patches, tc.patches_per_step)
    return dataclasses.replace(config, training=dataclasses.replace(
        tc, steps=tc.epochs * per, epochs=None, eval_every=tc.eval_every * per,
        checkpoint_every=tc.checkpoint_every * per))


def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def with_defaults(saved: Mapping[str, Any]) -> dict:
    """A config mapping saved by an earlier version (a checkpoint's ``config``, a run's
    ``config.yaml``) with every key it lacks set to this version's default, so that a key
    added since (``training.pixels_per_call``) compares equal to a config that leaves it at
    its default and unequal to one that sets it. Keys it has are kept as they are (unknown
    ones too: the comparison reports them). A new dict; ``saved`` is not changed."""
    return _fill_defaults(copy.deepcopy(dict(saved)), _to_plain(ExperimentConfig()))


def _fill_defaults(have, default):
    if not isinstance(have, dict) or not isinstance(default, Mapping):
        return have
    for k, v in default.items():
        have[k] = copy.deepcopy(v) if k not in have else _fill_defaults(have[k], v)
    return have


def _build(cls, d: Mapping[str, Any], where: str):
    """One section: unknown keys here; types and ranges in the dataclass's checks."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def from_dict(d: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a plain mapping (from YAML or a checkpoint) into an ExperimentConfig."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"config: unknown key(s) {unknown}; known: {sorted(_SECTIONS)}")
    kwargs: dict[str, Any] = {}
    for k, v in d.items():
        if k == "name":
            kwargs[k] = checks.string("name", v)
        else:
            kwargs[k] = _build(_CLASSES[k], {} if v is None else v, k)
    return ExperimentConfig(**kwargs)


# -- YAML ----------------------------------------------------------------------------------

_FLOAT_TAG = "tag:yaml.org,2002:float"
#: YAML 1.1's floats, plus exponents without a dot or without a sign (``1e-3``, ``2.5e3``).
_FLOAT = re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose float resolver also takes ``1e-3``."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))


def _reject_duplicate_keys(node: yaml.Node, source: str, path: str = "", seen: set | None = None) -> None:
    """ConfigError naming the dotted key and both lines if a mapping repeats a key (PyYAML
    would silently keep the last)."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # anchors and aliases share nodes
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            here = path
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                here = f"{path}.{key_node.value}" if path else key_node.value
                line = key_node.start_mark.line + 1
                if key_node.value in first:
                    raise ConfigError(f"{source}: duplicate key {here!r} "
                                      f"(lines {first[key_node.value]} and {line})")
                first[key_node.value] = line
            _reject_duplicate_keys(value_node, source, here, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _reject_duplicate_keys(item, source, f"{path}[{i}]", seen)


def _load_yaml(text: str, source: str) -> Any:
    """One YAML document with :class:`_Loader`; ConfigError for duplicate keys or bad YAML."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _reject_duplicate_keys(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(e).split())})") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a plain mapping ({} if empty); ConfigError naming the file if it
    is missing, not valid YAML, repeats a key, or is not a mapping."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read ({e})") from None
    d = _load_yaml(text, str(p))
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(d).__name__}")
    return d


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. training.steps=50")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key")
    value = _load_yaml(raw, f"--set {text!r}") if raw.strip() else ""
    return path, value


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    d = copy.deepcopy(dict(d))
    for text in overrides or []:
        path, value = parse_override(text)
        node = d
        for p in path[:-1]:
            if node.get(p) is None:  # absent, or an empty section in the YAML (``loss:``)
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {p} is not a section")
        node[path[-1]] = value
    return d


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The one loader: YAML file (or defaults), then ``--set`` overrides, then validation."""
    d: dict = read_yaml(path) if path is not None else {}
    try:
        return from_dict(apply_overrides(d, overrides or []))
    except ConfigError as e:
        raise ConfigError(f"{path or '<defaults>'}: {e}") from None
