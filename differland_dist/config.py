"""The experiment configuration: typed, validated, frozen; one loader for YAML files,
``--set key=value`` overrides and the copy saved in every checkpoint.

An unknown key anywhere is an error that names it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from differland_dist.data.schema import PREDICTOR_SET_ORDER, STREAMS
from differland_dist.errors import ConfigError
from differland_dist.loss.terms import TERMS, LossConfig
from differland_dist.model.config import ModelConfig
from differland_dist.network.mlp import NetworkConfig

DEFAULT_PRODUCTS = {s.name: (None if s.name == "vod" else s.default_product) for s in STREAMS}


@dataclass(frozen=True)
class DataConfig:
    """Where the pixels are and which inputs and observation products are used."""

    url: str = ""
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    predictors: tuple[str, ...] = ("PFT", "CLIM", "SOIL", "AGE")
    #: stream -> product variable (``obs_<product>`` in the store), or None to switch it off
    products: Mapping[str, str | None] = field(default_factory=lambda: dict(DEFAULT_PRODUCTS))
    cache: str | None = None   # None, "memory" or a local directory

    def __post_init__(self):
        preds = tuple(self.predictors)
        bad = [p for p in preds if p not in PREDICTOR_SET_ORDER]
        if bad or not preds:
            raise ConfigError(f"data.predictors: unknown set(s) {bad}; choose from {list(PREDICTOR_SET_ORDER)}")
        object.__setattr__(self, "predictors", preds)
        unknown = set(self.products) - set(DEFAULT_PRODUCTS)
        if unknown:
            raise ConfigError(f"data.products: unknown stream(s) {sorted(unknown)}; streams: {list(DEFAULT_PRODUCTS)}")
        object.__setattr__(self, "products", {**DEFAULT_PRODUCTS, **dict(self.products)})
        object.__setattr__(self, "storage_options", dict(self.storage_options))


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"                 # adam | adamw | sgd
    learning_rate: float = 1e-3
    schedule: str = "constant"         # constant | cosine | warmup_cosine
    warmup_steps: int = 0
    clip_norm: float | None = None     # global-norm clipping
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.name not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"optimizer.name must be adam, adamw or sgd, got {self.name!r}")
        if self.schedule not in ("constant", "cosine", "warmup_cosine"):
            raise ConfigError(f"optimizer.schedule must be constant, cosine or warmup_cosine, got {self.schedule!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"optimizer.learning_rate must be > 0, got {self.learning_rate}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigError(f"optimizer.clip_norm must be > 0 or null, got {self.clip_norm}")


@dataclass(frozen=True)
class TrainingConfig:
    steps: int = 100
    patches_per_step: int = 8
    eval_every: int = 10               # held-out evaluation cadence (0: only at the end)
    checkpoint_every: int = 10         # checkpoint cadence (always also at the end)
    seed: int = 0
    on_nonfinite: str = "skip"         # skip | reduce_lr | rollback
    max_nonfinite: int = 10            # consecutive non-finite steps before giving up
    lr_reduction: float = 0.5          # factor for reduce_lr
    patches_per_call: int = 1          # patches per compiled call on a worker (fixed shape;
                                       # raise it on GPUs to fill the device)

    def __post_init__(self):
        if self.steps < 1 or self.patches_per_step < 1:
            raise ConfigError(f"training.steps and training.patches_per_step must be >= 1, got {self.steps}, {self.patches_per_step}")
        if self.on_nonfinite not in ("skip", "reduce_lr", "rollback"):
            raise ConfigError(f"training.on_nonfinite must be skip, reduce_lr or rollback, got {self.on_nonfinite!r}")
        if self.max_nonfinite < 1:
            raise ConfigError(f"training.max_nonfinite must be >= 1, got {self.max_nonfinite}")
        if not 0 < self.lr_reduction < 1:
            raise ConfigError(f"training.lr_reduction must be in (0, 1), got {self.lr_reduction}")
        if self.patches_per_call < 1:
            raise ConfigError(f"training.patches_per_call must be >= 1, got {self.patches_per_call}")
        if self.eval_every < 0 or self.checkpoint_every < 0:
            raise ConfigError("training.eval_every and training.checkpoint_every must be >= 0")


@dataclass(frozen=True)
class RayConfig:
    address: str = "local"             # local | auto | ray://host:port
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    tpus_per_worker: float = 0.0
    jax_platforms: str = ""            # "" = cpu unless the worker has GPUs/TPUs
    jax_threads_per_worker: int = 0    # 0 = as many as the CPUs given
    runtime_env: Mapping[str, Any] = field(default_factory=dict)
    max_worker_restarts: int = 3

    def __post_init__(self):
        if self.workers < 1:
            raise ConfigError(f"ray.workers must be >= 1, got {self.workers}")
        if not (self.address in ("local", "auto") or self.address.startswith("ray://")
                or ":" in self.address):
            raise ConfigError(f"ray.address must be local, auto, ray://host:port or host:port, got {self.address!r}")
        object.__setattr__(self, "runtime_env", dict(self.runtime_env))


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "differland"
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    ray: RayConfig = field(default_factory=RayConfig)

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


def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _build(cls, d: Mapping[str, Any], where: str):
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for k, v in d.items():
        typ = known[k].type
        if isinstance(v, list):
            v = tuple(v)
        if typ in ("int",) and isinstance(v, float) and v.is_integer():
            v = int(v)
        if typ == "float" and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if typ == "int" and not (isinstance(v, int) and not isinstance(v, bool)):
            raise ConfigError(f"{where}.{k}: expected an integer, got {v!r}")
        if typ == "float" and not isinstance(v, float):
            raise ConfigError(f"{where}.{k}: expected a number, got {v!r}")
        if typ == "bool" and not isinstance(v, bool):
            raise ConfigError(f"{where}.{k}: expected true/false, got {v!r}")
        if typ == "str" and not isinstance(v, str):
            raise ConfigError(f"{where}.{k}: expected a string, got {v!r}")
        kwargs[k] = v
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
            if not isinstance(v, str):
                raise ConfigError(f"name: expected a string, got {v!r}")
            kwargs[k] = v
        else:
            kwargs[k] = _build(_CLASSES[k], v or {}, k)
    return ExperimentConfig(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. training.steps=50")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: value does not parse ({e})") from None
    return path, value


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    d = json.loads(json.dumps(d))  # deep copy of plain data
    for text in overrides or []:
        path, value = parse_override(text)
        node = d
        for p in path[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {p} is not a section")
        node[path[-1]] = value
    return d


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The one loader: YAML file (or defaults), then ``--set`` overrides, then validation."""
    d: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
    try:
        return from_dict(apply_overrides(d, overrides or []))
    except ConfigError as e:
        raise ConfigError(f"{path or '<defaults>'}: {e}") from None
