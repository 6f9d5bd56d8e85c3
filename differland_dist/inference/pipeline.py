"""Batch inference: a Ray Data pipeline over chunks of pixels with an autoscaling actor pool.

The driver checks its inputs (checkpoint, store, predictor sets) before any work, creates the
output store (or reopens a partial one made from the same checkpoint and store), and plans
tasks: runs of at most ``chunks_per_task`` consecutive output chunks that are not yet committed.
``ray.data.from_items(tasks).map_batches(ChunkWorker, compute=ActorPoolStrategy(min, max),
batch_size=1)`` runs them: each actor loads the network once (and compiles the model for one
fixed task shape), then per task reads the pixels' forcing and predictors from the store, runs
the network and DALEC, writes whole output chunks by region and commits them (``chunk_done``).
The driver consumes the small per-task records (pixels, read/compute/write seconds) to log
progress; when every chunk is committed it writes the gridded maps and marks the output
complete. A rerun of a complete output does nothing; of a partial one, only missing chunks.

``executor="local"`` runs the same worker in this process, one task after the other.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np

from differland_dist.data.batch import predictor_names
from differland_dist.data.store import PixelStore
from differland_dist.data.validate import check_store
from differland_dist.errors import DataValidationError, DifferlandError, OutputMismatchError
from differland_dist.inference.output import (
    create_output, done_chunks, finish, network_digest, open_output, plan_tasks, read_attrs,
    remove_output, store_digest)
from differland_dist.vocabulary.series import DEFAULT_SERIES, check_series
from differland_dist.inference.compute import check_standardizer, check_store_inputs, input_variables
from differland_dist.inference.export import NETCDF_FILES, export_netcdf
from differland_dist.inference.worker import ChunkWorker
from differland_dist.storage.lease import LEASE_FILE, Lease
from differland_dist.storage.location import Location, absolute_url, as_location
from differland_dist.network.mlp import network_to_arrays
from differland_dist.common import progress as progress_log
from differland_dist.common.process_env import jax_process_env
from differland_dist.runs.trained import load_trained
from differland_dist.storage.secrets import safe_config_dict

log = logging.getLogger(__name__)

#: Name of the zarr store inside ``--out`` when exporting netCDF.
NETCDF_ZARR_NAME = "inference.zarr"


@dataclass(frozen=True)
class InferenceOptions:
    """How inference runs.

    min_actors, max_actors: the autoscaling actor pool (``ActorPoolStrategy``).
    cpus_per_actor, gpus_per_actor: Ray resources of each actor (GPU actors use JAX "cuda").
    pixels_per_task: pixels per task, rounded down to whole output chunks (at least one).
    chunk_pixels: target pixels per output chunk, rounded down to whole input store chunks
      (at least one); larger chunks mean fewer, larger objects.
    series: output series (``vocabulary.series.SERIES`` names).
    executor: "ray" (Ray Data) or "local" (in this process, sequentially).
    address: Ray address used when Ray is not initialised yet (None: start a local Ray).
    jax_platforms: JAX_PLATFORMS of the actors ("" = cuda with GPUs, else cpu).
    max_tasks: compute at most this many tasks in this call (None: all); the rest stays for
      a later call (the output stays partial).
    read_threads: concurrent variable reads per task.
    progress_bars: Ray Data's progress bars (the driver logs progress lines either way, hidden by
      differland_dist.common.progress.enable(False)).
    """

    min_actors: int = 1
    max_actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    pixels_per_task: int = 4096
    chunk_pixels: int = 2048
    series: tuple[str, ...] = DEFAULT_SERIES
    executor: str = "ray"
    address: str | None = None
    jax_platforms: str = ""
    max_tasks: int | None = None
    read_threads: int = 8
    progress_bars: bool = False

    def __post_init__(self):
        if self.executor not in ("ray", "local"):
            raise DifferlandError(f"executor must be 'ray' or 'local', got {self.executor!r}")
        if not 1 <= self.min_actors <= self.max_actors:
            raise DifferlandError(f"need 1 <= min_actors <= max_actors, got {self.min_actors}, "
                                  f"{self.max_actors}")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise DifferlandError("cpus_per_actor must be > 0 and gpus_per_actor >= 0")
        if self.pixels_per_task < 1 or self.chunk_pixels < 1:
            raise DifferlandError(f"pixels_per_task and chunk_pixels must be >= 1, got "
                                  f"{self.pixels_per_task}, {self.chunk_pixels}")
        if self.max_tasks is not None and self.max_tasks < 0:
            raise DifferlandError(f"max_tasks must be >= 0, got {self.max_tasks}")
        object.__setattr__(self, "series", check_series(self.series))


@dataclass
class InferenceReport:
    """What a call did. ``tasks``: one record per task computed (see ``ChunkWorker.process``)."""

    out: str
    n_pixels: int
    n_time: int
    n_chunks: int
    already_complete: bool = False
    complete: bool = False
    chunks_computed: list[int] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    setup_s: float = 0.0
    run_s: float = 0.0
    finish_s: float = 0.0
    wall_s: float = 0.0
    netcdf: list[str] = field(default_factory=list)

    @property
    def pixels_computed(self) -> int:
        return int(sum(t["pixels"] for t in self.tasks))

    def pixel_months_per_s(self) -> float:
        """Pixel-months computed per second of the whole call (read, compute, write, setup)."""
        return self.pixels_computed * self.n_time / self.wall_s if self.wall_s > 0 else float("nan")

    def time_fractions(self) -> dict[str, float]:
        """Fractions of the actors' busy time in read / compute / write, and actor start-up
        (network load + compilation)."""
        parts = {k: float(sum(t[f"{k}_s"] for t in self.tasks)) for k in ("read", "compute", "write", "init")}
        total = sum(parts.values())
        return {k: (v / total if total > 0 else float("nan")) for k, v in parts.items()}

    def summary(self) -> dict[str, Any]:
        return {"out": self.out, "n_pixels": self.n_pixels, "n_time": self.n_time,
                "n_chunks": self.n_chunks, "already_complete": self.already_complete,
                "complete": self.complete, "chunks_computed": len(self.chunks_computed),
                "pixels_computed": self.pixels_computed, "wall_s": self.wall_s,
                "setup_s": self.setup_s, "run_s": self.run_s, "finish_s": self.finish_s,
                "pixel_months_per_s": self.pixel_months_per_s(),
                "time_fractions": self.time_fractions(),
                "actors": len({t.get("actor") for t in self.tasks}), "netcdf": self.netcdf}


def actor_env(options: InferenceOptions) -> dict[str, str]:
    """Environment of the actors (through ``runtime_env``): JAX platform and threads, gcsfs."""
    platforms = options.jax_platforms or ("cuda" if options.gpus_per_actor > 0 else "cpu")
    return jax_process_env(platforms, max(1, int(options.cpus_per_actor)))


# -- the driver -----------------------------------------------------------------------------------
def check_inputs(store: PixelStore, predictor_names: Sequence[str]) -> None:
    """Pre-flight check of everything inference will read, before any output is written: the
    store's validation (:func:`~differland_dist.data.validate.check_store`, as calibrate does)
    limited to the variables the tasks read, so a NaN in forcing, a missing or corrupt chunk is
    refused with the variable and pixel/time range instead of becoming NaN series."""
    try:
        check_store(store, variables=input_variables(store.array_names, predictor_names))
    except DataValidationError as e:
        raise DataValidationError(e.problems, source=f"{store.url}: refusing to run inference, "
                                  "nothing was written") from None


def _identity(trained, store: PixelStore, series: Sequence[str], checkpoint: str) -> dict[str, Any]:
    """Attributes that say what an output was made from (compared when resuming)."""
    cfg = trained.config
    arrays = network_to_arrays(trained.network)
    arrays["std_mean"] = np.asarray(trained.standardizer.mean)
    arrays["std_std"] = np.asarray(trained.standardizer.std)
    return {
        "source_store": store.url,
        "source_store_meta_sha256": store_digest(store),
        "checkpoint": str(checkpoint),
        "checkpoint_file": trained.source,
        "checkpoint_step": int(trained.step),
        "network_sha256": network_digest(arrays),
        "model_closed_budget": bool(cfg.model.closed_budget),
        "network_activation": cfg.network.activation,
        "predictor_sets": list(cfg.data.predictors),
        "warm_up": int(cfg.loss.warm_up),
        "config_json": json.dumps(cfg.to_dict(), sort_keys=True),
    }


#: What an existing output must share with this call to be resumed (its chunking is kept).
_MUST_MATCH = ("source_store_meta_sha256", "network_sha256", "model_closed_budget", "series",
               "n_pixels", "n_time")


def prepare_output(location: Location, identity: dict[str, Any], store: PixelStore,
                   series: Sequence[str], overwrite: bool, chunk_pixels: int) -> str:
    """Create the output, or check an existing one; returns "new", "partial" or "complete".

    An existing output made from another checkpoint, store or series list is an error unless
    ``overwrite`` (then it is replaced); anything else at ``location`` is never deleted."""
    url, fs, root = location.url, location.fs, location.path
    attrs = read_attrs(location)
    if attrs is None and fs.exists(root) and (fs.isfile(root) or fs.ls(root)):
        raise DifferlandError(f"{url}: something is there but no inference output; refusing to "
                              "write into it")
    if attrs is not None:
        want = {"series": list(series), "n_pixels": store.n_pixels, "n_time": store.n_time,
                **identity}
        diff = [k for k in _MUST_MATCH if attrs.get(k) != want.get(k)]
        if diff and not overwrite:
            raise OutputMismatchError(f"{url}: an inference output made from a different "
                                  f"{'/'.join(diff)} is there; pass --overwrite to replace it")
        if overwrite:
            log.info("removing the existing output %s", url)
            remove_output(location)
        else:
            return "complete" if attrs.get("complete") else "partial"
    create_output(location, store, series, identity, chunk_pixels)
    return "new"


def _execute_local(tasks, job, options, on_record):
    worker = ChunkWorker(job)
    try:
        for i, (k0, k1) in enumerate(tasks):
            on_record(worker.process(i, k0, k1))
    finally:
        worker.close()


def _execute_ray(tasks, job, options: InferenceOptions, on_record):
    # imported here: Ray loads only when inference runs on Ray (the CLI imports this module at
    # start-up; the local executor needs none)
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    started = False
    if not ray.is_initialized():
        with warnings.catch_warnings():  # JAX warns of fork(); Ray forks only to exec
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            ray.init(address=options.address, include_dashboard=False, log_to_driver=True,
                     runtime_env={"env_vars": {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}})
        started = True
    ctx = DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.execution_options.preserve_order)
    try:
        ctx.enable_progress_bars = bool(options.progress_bars)
        ctx.execution_options.preserve_order = False
        items = [{"task": i, "k0": k0, "k1": k1} for i, (k0, k1) in enumerate(tasks)]
        remote: dict[str, Any] = {"num_cpus": options.cpus_per_actor,
                                  "runtime_env": {"env_vars": actor_env(options)}}
        if options.gpus_per_actor > 0:
            remote["num_gpus"] = options.gpus_per_actor
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        results = ds.map_batches(
            ChunkWorker, fn_constructor_kwargs={"job": job}, batch_size=1, batch_format="numpy",
            compute=ActorPoolStrategy(min_size=options.min_actors, max_size=options.max_actors),
            **remote)
        for row in results.iter_rows():
            on_record({k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
    finally:
        ctx.enable_progress_bars, ctx.execution_options.preserve_order = saved
        if started:
            ray.shutdown()


class Inputs(NamedTuple):
    """What inference reads: the trained network, where it and the store are, the open store."""

    trained: Any              # runs.TrainedCheckpoint
    checkpoint: Location      # the checkpoint (or run directory) as given
    store: Location
    pixels: PixelStore


def open_inputs(checkpoint: Location | str, store: Location | str | None) -> Inputs:
    """Load the checkpoint and open the store, checking every input before any output exists.

    A store given as a URL string (or None: the checkpoint config's ``data.url``) is reached
    with the checkpoint's storage options when it has some, else the config's."""
    ckpt = as_location(checkpoint)
    trained = load_trained(ckpt)
    cfg = trained.config
    if not isinstance(store, Location):
        url = store or cfg.data.url
        if not url:
            raise DifferlandError("no store: pass --store (the checkpoint's config has no data.url)")
        store = Location(url, ckpt.options or dict(cfg.data.storage_options))
    pixels = PixelStore(store)
    if not pixels.attrs.get("complete", False):
        raise DifferlandError(f"{store.url}: the store is not complete (attrs.complete is not true)")
    names = predictor_names(cfg.data.predictors)
    check_store_inputs(pixels.array_names, cfg.data.predictors, names, store.url)
    check_standardizer(trained.standardizer, names)
    check_inputs(pixels, names)
    return Inputs(trained, ckpt, store, pixels)


def output_identity(inputs: Inputs, series: Sequence[str]) -> dict[str, Any]:
    """The output's identity attributes, with the saved config without credentials
    (:mod:`differland_dist.storage.secrets`)."""
    identity = _identity(inputs.trained, inputs.pixels, series, inputs.checkpoint.url)
    identity["config_json"] = json.dumps(safe_config_dict(inputs.trained.config, strict=False),
                                         sort_keys=True)
    return identity


def output_lease(location: Location, force: bool) -> Lease:
    """One writer per output; the lease file sits beside it, so that the output holds only
    what it lists as its own."""
    return Lease(location, owner="infer", force=force,
                 file=Location(f"{location.url}{LEASE_FILE}", location.options)).acquire()


class Plan(NamedTuple):
    """The tasks of this call: runs ``(k0, k1)`` of consecutive chunks not yet committed."""

    tasks: list[tuple[int, int]]
    chunks_per_task: int
    chunk_pixels: int
    pixels: int  # pixels the tasks compute


def plan(group, location: Location, options: InferenceOptions, state: str) -> Plan:
    """The tasks of the chunks of the output ``group`` (at ``location``) not yet committed."""
    N, T = int(group.attrs["n_pixels"]), int(group.attrs["n_time"])
    C, n_chunks = int(group.attrs["chunk_pixels"]), int(group.attrs["n_chunks"])
    done = done_chunks(group)
    chunks_per_task = max(1, options.pixels_per_task // C)
    tasks = plan_tasks(done, chunks_per_task)
    if options.max_tasks is not None:
        tasks = tasks[: options.max_tasks]
    todo_px = sum(min(k1 * C, N) - k0 * C for k0, k1 in tasks)
    log.info("%s: %s output, %d of %d chunks to compute (%d pixels x %d steps) in %d task(s) "
             "of up to %d chunk(s)", location.url, state, int((~done).sum()), n_chunks, todo_px, T,
             len(tasks), chunks_per_task)
    return Plan(tasks, chunks_per_task, C, todo_px)


def task_job(inputs: Inputs, out: Location, series: Sequence[str], task_pixels: int,
             options: InferenceOptions) -> dict[str, Any]:
    """The plain-data job each worker is built from: the resolved checkpoint file (not a run
    directory whose latest checkpoint may move on meanwhile), the store, the output."""
    return {"checkpoint": absolute_url(inputs.trained.source),
            "checkpoint_storage_options": inputs.checkpoint.options,
            "store": absolute_url(inputs.store.url), "store_storage_options": inputs.store.options,
            "out": absolute_url(out.url), "out_storage_options": out.options, "series": list(series),
            "task_pixels": int(task_pixels), "read_threads": options.read_threads}


def compute_tasks(work: Plan, job: dict[str, Any], options: InferenceOptions,
                  report: InferenceReport) -> None:
    """Run the planned tasks (locally or on Ray Data), recording each task in ``report``."""
    progress = _Progress(work.pixels, report.n_time)

    def on_record(rec: dict[str, Any]) -> None:
        report.tasks.append(rec)
        report.chunks_computed.extend(range(rec["k0"], rec["k1"]))
        progress.add(rec["pixels"])

    t1 = time.perf_counter()
    if work.tasks:
        run = _execute_local if options.executor == "local" else _execute_ray
        run(work.tasks, job, options, on_record)
    report.run_s = time.perf_counter() - t1
    report.chunks_computed.sort()


def run_inference(checkpoint: Location | str, out: Location | str,
                  store: Location | str | None = None, *,
                  options: InferenceOptions = InferenceOptions(), overwrite: bool = False,
                  netcdf: bool = False, force: bool = False) -> InferenceReport:
    """Run (or resume) inference of a trained network over a store.

    Args:
      checkpoint: a checkpoint ``.npz`` or a run directory (its final network, else latest).
      out: output zarr; with ``netcdf`` a directory that receives ``inference.zarr`` and the
        netCDF export (``parameters.nc``, ``maps.nc``, ``series.nc``). A URL string is
        reached with the store's storage options.
      store: input store (default: the checkpoint config's ``data.url``; a URL string is
        reached with the checkpoint's storage options, else the config's).
      options: see :class:`InferenceOptions`.
      overwrite: replace an output made from another checkpoint/store/series.
      force: take over the output's lease from a stale holder (:mod:`differland_dist.storage.lease`;
        the lease is ``<out>.differland-lease.json``, held while this call writes).
    """
    t0 = time.perf_counter()
    inputs = open_inputs(checkpoint, store)
    out = as_location(out, inputs.store.options)
    zarr_loc = out.join(NETCDF_ZARR_NAME) if netcdf else out
    series = options.series
    identity = output_identity(inputs, series)
    lease = output_lease(zarr_loc, force)
    try:
        state = prepare_output(zarr_loc, identity, inputs.pixels, series, overwrite,
                               options.chunk_pixels)
        group = open_output(zarr_loc)
        report = InferenceReport(zarr_loc.url, inputs.pixels.n_pixels, inputs.pixels.n_time,
                                 int(group.attrs["n_chunks"]))
        if state == "complete":
            report.already_complete = report.complete = True
            report.netcdf = _netcdf_files(zarr_loc, out) if netcdf else []
            log.info("%s is already complete: nothing to do", zarr_loc.url)
        else:
            work = plan(group, zarr_loc, options, state)
            job = task_job(inputs, zarr_loc, series,
                           min(work.chunks_per_task * work.chunk_pixels, report.n_pixels), options)
            report.setup_s = time.perf_counter() - t0
            compute_tasks(work, job, options, report)
            complete_output(group, zarr_loc, out if netcdf else None, lease, report)
        report.wall_s = time.perf_counter() - t0
        if not report.already_complete:
            log.info("inference: %d pixels in %.1f s (%.3g pixel-months/s end to end)%s",
                     report.pixels_computed, report.wall_s, report.pixel_months_per_s(),
                     "; complete" if report.complete else "")
        return report
    finally:
        lease.release()


def complete_output(group, location: Location, netcdf_dir: Location | None, lease: Lease,
                    report: InferenceReport) -> None:
    """When every chunk is committed: the maps, ``complete`` and the netCDF export (into
    ``netcdf_dir`` when given); else log what is missing."""
    t2 = time.perf_counter()
    if done_chunks(group).all():
        lease.check()  # another writer took the output over meanwhile: do not mark it complete
        finish(location)
        report.complete = True
        if netcdf_dir is not None:
            report.netcdf = export_netcdf(location, netcdf_dir)
    else:
        log.info("%s: %d chunk(s) still missing; run again to continue", location.url,
                 int((~done_chunks(group)).sum()))
    report.finish_s = time.perf_counter() - t2


def _netcdf_files(zarr_loc: Location, out: Location) -> list[str]:
    """The netCDF files of a complete output: exported again when one is missing."""
    files = [out.join(n) for n in NETCDF_FILES]
    if all(f.exists() for f in files):
        return [f.url for f in files]
    return export_netcdf(zarr_loc, out)


class _Progress:
    """Logs pixels done (at most every few seconds, and at the end)."""

    def __init__(self, total_pixels: int, n_time: int, every_s: float = 5.0):
        self.total, self.T, self.every = int(total_pixels), int(n_time), float(every_s)
        self.done = 0
        self.t0 = self.last = time.perf_counter()

    def add(self, pixels: int) -> None:
        self.done += int(pixels)
        now = time.perf_counter()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else math.inf
            # through the progress logger: --no-progress hides these lines with the others
            progress_log.log.info("pixels done: %d / %d (%.0f %%), %.3g pixel-months/s, ETA %.0f s",
                                  self.done, self.total, 100.0 * self.done / max(self.total, 1),
                                  rate * self.T, eta)
