"""The run directory: where ``differland calibrate`` writes and what inference reads.

    RUN_DIR/config.yaml                      the full validated config of the run
    RUN_DIR/metrics.jsonl                    one JSON object per step / evaluation
    RUN_DIR/checkpoints/step_00000050.npz    safe checkpoints (see :mod:`differland_dist.checkpoint`)
    RUN_DIR/checkpoints/latest.json          {"step": 50, "path": "step_00000050.npz"}, written last
    RUN_DIR/network.npz                      the final network (same format), written at the end
    RUN_DIR/.differland-lease.json           the running writer's lease (see :mod:`differland_dist.lease`)

Saved configs never hold credentials (:func:`differland_dist.secrets.safe_config_dict`).

A checkpoint holds the network (``net_*``), the predictor standardisation (``std_mean``,
``std_std``), the optimizer state (``opt/...``) and, in its metadata, the step, the full
config, the data fingerprint and the RNG state.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from differland_dist import checkpoint
from differland_dist.config import ExperimentConfig, from_dict
from differland_dist.errors import CheckpointError, DifferlandError
from differland_dist.location import Location, join
from differland_dist.network.mlp import NetworkConfig, NetworkParams
from differland_dist.network.standardize import Standardizer

log = logging.getLogger(__name__)


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.npz"


#: A checkpoint file name and the step it holds.
CHECKPOINT_RE = re.compile(r"^step_(\d{8})\.npz$")

#: The files of a run directory (and its ``checkpoints/``) that differland writes.
RUN_FILES = re.compile(r"^(config\.yaml|metrics\.jsonl|network\.npz|latest\.json|step_\d{8}\.npz|"
                       r"\.differland-lease\.json)$")

#: The temporary name ``Location.write_atomic`` gives a file before renaming it.
TEMP_SUFFIX = re.compile(r"\.tmp-[0-9a-f]{8}$")


def read_latest(run_dir: str, storage_options: dict | None = None) -> dict | None:
    """``checkpoints/latest.json`` of a run directory ({"step", "path"}), or None if absent;
    CheckpointError naming the file if it is unreadable."""
    loc = Location(join(run_dir, "checkpoints", "latest.json"), storage_options)
    try:
        info = loc.read_json(default=None)
    except DifferlandError as e:
        raise CheckpointError(f"{e}; it should be {{\"step\": N, \"path\": \"step_N.npz\"}}") from None
    except OSError as e:
        raise CheckpointError(f"{loc.url}: cannot be read ({type(e).__name__}: {e})") from None
    if info is None:
        return None
    if not (isinstance(info, dict) and isinstance(info.get("path"), str)
            and CHECKPOINT_RE.match(info["path"]) and isinstance(info.get("step"), int)):
        raise CheckpointError(f"{loc.url}: not a latest-checkpoint record (expected "
                              f"{{\"step\": N, \"path\": \"step_N.npz\"}}, got {str(info)[:80]!r})")
    return info


def latest_checkpoint(run_dir: str, storage_options: dict | None = None) -> str | None:
    """URL of the run's newest complete checkpoint, or None; CheckpointError if
    ``latest.json`` is unreadable."""
    info = read_latest(run_dir, storage_options)
    return None if info is None else join(run_dir, "checkpoints", info["path"])


def checkpoint_steps(run_dir: str, storage_options: dict | None = None) -> list[int]:
    """Steps of the ``checkpoints/step_*.npz`` files of a run directory, newest first."""
    found = Location(join(run_dir, "checkpoints"), storage_options).list_objects()
    steps = [int(m.group(1)) for k in found if "/" not in k and (m := CHECKPOINT_RE.match(k))]
    return sorted(steps, reverse=True)


def remove_stale_temp_files(run_dir: str, storage_options: dict | None = None) -> list[str]:
    """Delete the temporary files a killed writer of this run directory left (local only:
    on object stores nothing is written under a temporary name). Only names made of one of
    our files plus ``write_atomic``'s suffix are removed; the caller must hold the run's
    lease. Returns the removed keys."""
    loc = Location(run_dir, storage_options)
    if not loc.local:
        return []
    removed = []
    for key in loc.list_objects():
        parts = key.split("/")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "checkpoints"):
            continue
        base = TEMP_SUFFIX.sub("", parts[-1])
        if base != parts[-1] and RUN_FILES.match(base):
            loc.join(key).remove()
            removed.append(key)
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run: %s", run_dir,
                 len(removed), ", ".join(sorted(removed)))
    return removed


def resolve_checkpoint(url: str, storage_options: dict | None = None) -> str:
    """A checkpoint file URL from a file URL or a run directory (its final network, else its
    latest checkpoint)."""
    if url.endswith(".npz"):
        return url
    final = join(url, "network.npz")
    if checkpoint.exists(final, storage_options):
        return final
    latest = latest_checkpoint(url, storage_options)
    if latest is None:
        raise CheckpointError(f"{url}: neither a .npz checkpoint nor a run directory with checkpoints")
    return latest


@dataclass(frozen=True)
class TrainedModel:
    network: NetworkParams
    network_config: NetworkConfig
    standardizer: Standardizer
    config: ExperimentConfig
    step: int
    source: str
    meta: dict[str, Any]


def load_trained(url: str, storage_options: dict | None = None) -> TrainedModel:
    """Network, standardisation and config of a training checkpoint or run directory."""
    from differland_dist.network.io import network_from_checkpoint

    src = resolve_checkpoint(url, storage_options)
    arrays, meta = checkpoint.load(src, storage_options)
    net, ncfg, std = network_from_checkpoint(arrays, meta)
    if std is None or "config" not in meta:
        raise CheckpointError(f"{src}: holds a network but no training config/standardisation "
                              "(an imported network needs its predictor statistics)")
    return TrainedModel(net, ncfg, std, from_dict(meta["config"]), int(meta.get("step", 0)), src, meta)
