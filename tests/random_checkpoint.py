"""A random-checkpoint fixture: an untrained network for a store, for plumbing tests,
benchmarks and demos.

The network is randomly initialised (Glorot-normal, biases 1); the predictor standardisation is
fitted on the store's training pixels with the training input rule
(:func:`differland_dist.network.standardize.raw_inputs`), and the config (``data.url`` = the
store) is saved with it, so :func:`differland_dist.runs.load_trained` and ``differland infer``
read it like a checkpoint from ``differland calibrate``.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from differland_dist.storage.location import Location
from differland_dist.config import from_dict
from differland_dist.data.batch import predictor_names
from differland_dist.data.reader import PatchReader
from differland_dist.data.splits import TRAIN
from differland_dist.data.store import PixelStore
from differland_dist.network.io import save_network
from differland_dist.storage.checkpoint import CheckpointRecord
from differland_dist.storage.location import Location
from differland_dist.network.mlp import init_network
from differland_dist.network.standardize import Standardizer, input_names, raw_inputs


def random_checkpoint(store_url: str, out_url: str, *, predictor_sets=("PFT", "CLIM", "SOIL", "AGE"),
                      seed: int = 0, config: Mapping[str, Any] | None = None,
                      storage_options: dict | None = None, step: int = 0) -> str:
    """Write the checkpoint ``out_url`` (.npz) and return it.

    Args:
      store_url: the store whose training pixels fit the standardisation.
      predictor_sets: the config's ``data.predictors``.
      seed: PRNG seed of the weights.
      config: further config sections (e.g. ``{"loss": {"warm_up": 3}}``), merged.
      storage_options: fsspec options of the store and ``out_url`` (not saved in the config).
    """
    d: dict[str, Any] = {k: dict(v) for k, v in (config or {}).items()}
    d.setdefault("data", {})
    d["data"].update({"url": store_url, "predictors": list(predictor_sets)})
    cfg = from_dict(d)
    store = PixelStore(Location(store_url, storage_options))
    names = predictor_names(cfg.data.predictors)
    with PatchReader(store, names) as reader:
        raw = reader.read_predictors_all("train")
    lat = np.asarray(store.array("lat")[:])[store.split == TRAIN]
    std = Standardizer.fit(input_names(names), raw_inputs(raw, lat))
    net = init_network(jax.random.PRNGKey(seed), len(names), cfg.network)
    record = CheckpointRecord(kind="training", predictor_sets=tuple(cfg.data.predictors), step=int(step),
                              config=cfg.to_dict())
    save_network(Location(out_url, storage_options), net, cfg.network, record=record, standardizer=std)
    return out_url
