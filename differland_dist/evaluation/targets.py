"""What ``differland evaluate`` evaluates: an inference output store or a run directory (whose
output ``RUN_DIR/inference.zarr`` is made first when missing, partial or stale), the run
directory behind an output, and where results go by default."""

from __future__ import annotations

import logging
import posixpath
from typing import NamedTuple

from differland_dist.errors import DifferlandError, OutputMismatchError
from differland_dist.inference.output import read_attrs
from differland_dist.inference.pipeline import InferenceOptions, run_inference
from differland_dist.runs.layout import METRICS, resolve_checkpoint
from differland_dist.storage.location import Location, join

log = logging.getLogger(__name__)

INFERENCE_NAME = "inference.zarr"


class Target(NamedTuple):
    """output: the inference output store; run_dir: the run directory behind it (holding
    ``metrics.jsonl``) or None; is_run_dir: whether the target named was a run directory."""

    output: Location
    run_dir: Location | None
    is_run_dir: bool


def find_run_dir(attrs: dict, near: Location) -> Location | None:
    """The run directory of an output's checkpoint (holding ``metrics.jsonl``), if any,
    reached with ``near``'s options."""
    cands = []
    ck = str(attrs.get("checkpoint", ""))
    f = str(attrs.get("checkpoint_file", ""))
    if ck.startswith("[") or f.startswith("["):  # an ensemble's JSON list: no one run dir
        return None
    if ck and not ck.endswith(".npz"):
        cands.append(ck)
    if f:
        parent = posixpath.dirname(f.rstrip("/"))
        if posixpath.basename(parent) == "checkpoints":
            cands.append(posixpath.dirname(parent))
        cands.append(parent)
    for c in cands:
        if c and Location(c, near.options).join(METRICS).exists():
            return Location(c, near.options)
    return None


def default_out_dir(target: Location, is_run_dir: bool) -> Location:
    """Where results go by default: ``RUN_DIR/evaluation`` or ``<store>_evaluation``."""
    t = target.url.rstrip("/")
    if is_run_dir:
        return Location(join(t, "evaluation"), target.options)
    return Location((t[: -len(".zarr")] if t.endswith(".zarr") else t) + "_evaluation",
                    target.options)


def resolve_target(target: Location, store: Location | None, inference=None) -> Target:
    """The output store behind ``target`` and its run directory.

    For a run directory, inference runs into ``RUN_DIR/inference.zarr`` if that is missing or
    partial (resumed), or was made from another network than the run's current one (replaced);
    the run directory and its output are reached with ``target``'s options, the input store
    with ``store``'s (default: the run's config's).
    """
    attrs = read_attrs(target)
    if attrs is not None:
        return Target(target, find_run_dir(attrs, target), False)
    try:
        resolve_checkpoint(target)
    except DifferlandError:
        raise DifferlandError(f"{target.url}: neither an inference output store nor a run "
                              "directory with a network or checkpoints") from None
    run_dir = posixpath.dirname(target.url) if target.url.endswith(".npz") else target.url
    output = Location(join(run_dir, INFERENCE_NAME), target.options)
    kw = {"options": inference or InferenceOptions(), "store": store}
    try:  # a no-op when the output is complete and made from the run's current network
        run_inference(target, output, **kw)
    except OutputMismatchError as e:
        log.warning("%s; replacing it (the run's network changed)", e)
        run_inference(target, output, overwrite=True, **kw)
    return Target(output, Location(run_dir, target.options), True)
