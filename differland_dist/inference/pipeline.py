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
import socket
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from differland_dist.data.batch import predictor_names
from differland_dist.data.rows import RowReader
from differland_dist.data.schema import PER_PIXEL_FORCING, by_pixel_name
from differland_dist.data.store import PixelStore, resolve
from differland_dist.data.validate import check_store
from differland_dist.errors import DataValidationError, DifferlandError, OutputMismatchError
from differland_dist.inference import output as out_mod
from differland_dist.inference.compute import (
    check_finite, check_standardizer, check_store_inputs, compiled_forward, input_variables,
    pad_pixels, stack_inputs)
from differland_dist.inference.export import NETCDF_FILES, export_netcdf
from differland_dist.storage.lease import LEASE_FILE, Lease
from differland_dist.storage.location import Location
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
    series: output series (``output.SERIES`` names).
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
    series: tuple[str, ...] = out_mod.DEFAULT_SERIES
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
        object.__setattr__(self, "series", out_mod.check_series(self.series))


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


class ChunkWorker:
    """Loads the network once; per task reads, computes, writes and commits output chunks.

    Ray Data constructs it once per actor (``fn_constructor_kwargs={"job": job}``) and calls it
    with batches of task rows (``task``, ``k0``, ``k1``).

    job: ``checkpoint``, ``checkpoint_storage_options``, ``store``, ``store_storage_options``,
    ``out``, ``out_storage_options``, ``series``, ``task_pixels`` (the compiled pixel count),
    ``read_threads``.
    """

    def __init__(self, job: dict[str, Any]):
        t0 = time.perf_counter()
        # imported here: Ray actors import JAX after the runtime environment set JAX_PLATFORMS /
        # XLA flags
        import jax

        self.job = dict(job)
        self.trained = load_trained(Location(job["checkpoint"], job.get("checkpoint_storage_options")))
        cfg = self.trained.config
        self.names = predictor_names(cfg.data.predictors)
        self.series = tuple(job["series"])
        self.store = PixelStore(job["store"], job.get("store_storage_options"))
        self.writer = out_mod.ChunkWriter(job["out"], job.get("out_storage_options"))
        self.size = int(job["task_pixels"])
        need = input_variables(self.store.array_names, self.names)
        # per-step forcing given per pixel (sites of different years): <name>_by_pixel wins
        self.by_pixel = {v: by_pixel_name(v) for v in PER_PIXEL_FORCING
                         if by_pixel_name(v) in self.store.array_names}
        self.pixel_vars = [v for v in need if self.store.dims(v)[:1] == ("pixel",)]
        self.dims = {v: self.store.dims(v) for v in need}
        # chunks are fetched as raw objects and verified (checksum, size): a corrupt or
        # missing chunk is a DataValidationError naming it, never NaN series
        self.reader = RowReader(self.store, max_workers=int(job.get("read_threads", 8)))
        self.steps = self.reader.read([v for v in need if v not in self.pixel_vars])
        check_finite(self.steps, self.dims, 0, self.store.url)
        self._write_pool = ThreadPoolExecutor(max_workers=max(1, int(job.get("read_threads", 8))),
                                              thread_name_prefix="infer-write")
        n_in = len(self.names) + 1
        T = self.store.n_time
        t1 = time.perf_counter()
        self.fn = compiled_forward(self.trained.network, self.series, cfg.network.activation,
                                   bool(cfg.model.closed_budget), self.size, n_in, T,
                                   int(cfg.model.unroll))
        self.compile_s = time.perf_counter() - t1
        self.init_s = time.perf_counter() - t0
        self.actor = f"{socket.gethostname()}:{os.getpid()}"
        self.device = str(jax.devices()[0].platform)
        self._first = True
        log.info("inference worker %s ready on %s in %.1f s (compile %.1f s)", self.actor,
                 self.device, self.init_s, self.compile_s)

    def read(self, s: slice) -> dict[str, np.ndarray]:
        """Store variables of pixels ``s`` (per-pixel ones sliced; per-step ones whole), every
        chunk verified and every value finite (else DataValidationError naming the variable
        and the pixel/time range)."""
        out = self.reader.read(self.pixel_vars, s)
        check_finite(out, self.dims, s.start, self.store.url)
        out.update(self.steps)
        out.update({name: out[by] for name, by in self.by_pixel.items()})
        return out

    def process(self, task: int, k0: int, k1: int) -> dict[str, Any]:
        """Read, compute, write and commit chunks ``k0..k1-1``; returns the task's record."""
        C, N = self.writer.C, self.store.n_pixels
        s = out_mod.chunk_range(k0, k1, C, N)
        t0 = time.perf_counter()
        v = self.read(s)
        predictors, forcing = stack_inputs(v, self.names, self.trained.standardizer)
        t1 = time.perf_counter()
        P = predictors.shape[0]
        params, ys = self.fn(self.trained.network, pad_pixels(predictors, self.size),
                             pad_pixels(forcing, self.size))
        params = np.asarray(params)[:P]
        ys = np.asarray(ys)[:P]
        t2 = time.perf_counter()
        self.writer.write(k0, k1, params, {n: ys[..., i] for i, n in enumerate(self.series)},
                          pool=self._write_pool)
        t3 = time.perf_counter()
        init = self.init_s if self._first else 0.0
        self._first = False
        return {"task": int(task), "k0": int(k0), "k1": int(k1), "pixels": int(P),
                "read_s": t1 - t0, "compute_s": t2 - t1, "write_s": t3 - t2, "init_s": init,
                "compile_s": self.compile_s if init else 0.0, "actor": self.actor,
                "device": self.device, "finished_at": time.time()}

    def close(self) -> None:
        self.reader.close()
        self._write_pool.shutdown(wait=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        recs = [self.process(int(t), int(a), int(b))
                for t, a, b in zip(batch["task"], batch["k0"], batch["k1"])]
        return {k: np.asarray([r[k] for r in recs]) for k in recs[0]}


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
        "source_store_meta_sha256": out_mod.store_digest(store),
        "checkpoint": str(checkpoint),
        "checkpoint_file": trained.source,
        "checkpoint_step": int(trained.step),
        "network_sha256": out_mod.network_digest(arrays),
        "model_closed_budget": bool(cfg.model.closed_budget),
        "network_activation": cfg.network.activation,
        "predictor_sets": list(cfg.data.predictors),
        "warm_up": int(cfg.loss.warm_up),
        "config_json": json.dumps(cfg.to_dict(), sort_keys=True),
    }


#: What an existing output must share with this call to be resumed (its chunking is kept).
_MUST_MATCH = ("source_store_meta_sha256", "network_sha256", "model_closed_budget", "series",
               "n_pixels", "n_time")


def prepare_output(url: str, identity: dict[str, Any], store: PixelStore, series: Sequence[str],
                   storage_options: dict | None, overwrite: bool, chunk_pixels: int) -> str:
    """Create the output, or check an existing one; returns "new", "partial" or "complete".

    An existing output made from another checkpoint, store or series list is an error unless
    ``overwrite`` (then it is replaced); anything else at ``url`` is never deleted."""
    fs, root = resolve(url, storage_options)
    attrs = out_mod.read_attrs(url, storage_options)
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
            out_mod.remove_output(url, storage_options)
        else:
            return "complete" if attrs.get("complete") else "partial"
    out_mod.create_output(url, store, series, identity, storage_options, chunk_pixels)
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


def run_inference(checkpoint: str, out: str, store: str | None = None, *,
                  options: InferenceOptions = InferenceOptions(), overwrite: bool = False,
                  storage_options: dict | None = None, out_storage_options: dict | None = None,
                  checkpoint_storage_options: dict | None = None,
                  netcdf: bool = False, force: bool = False) -> InferenceReport:
    """Run (or resume) inference of a trained network over a store.

    Args:
      checkpoint: a checkpoint ``.npz`` or a run directory (its final network, else latest).
      out: output zarr URL; with ``netcdf`` a directory URL that receives ``inference.zarr``
        and the netCDF export (``parameters.nc``, ``maps.nc``, ``series.nc``).
      store: input store URL (default: the checkpoint config's ``data.url``).
      options: see :class:`InferenceOptions`.
      overwrite: replace an output made from another checkpoint/store/series.
      storage_options: fsspec options of the input store (default: the config's);
        ``out_storage_options`` of the output (default: the same),
        ``checkpoint_storage_options`` of the checkpoint (default: the same).
      force: take over the output's lease from a stale holder (:mod:`differland_dist.storage.lease`;
        the lease is ``<out>.differland-lease.json``, held while this call writes).
    """
    t0 = time.perf_counter()
    ckpt_so = checkpoint_storage_options if checkpoint_storage_options is not None else storage_options
    trained = load_trained(Location(checkpoint, ckpt_so))
    cfg = trained.config
    store_url = store or cfg.data.url
    if not store_url:
        raise DifferlandError("no store: pass --store (the checkpoint's config has no data.url)")
    so = dict(cfg.data.storage_options) if storage_options is None else dict(storage_options)
    oso = dict(so) if out_storage_options is None else dict(out_storage_options)
    pstore = PixelStore(store_url, so)
    if not pstore.attrs.get("complete", False):
        raise DifferlandError(f"{store_url}: the store is not complete (attrs.complete is not true)")
    names = predictor_names(cfg.data.predictors)
    check_store_inputs(pstore.array_names, cfg.data.predictors, names, store_url)
    check_standardizer(trained.standardizer, names)
    check_inputs(pstore, names)
    series = options.series
    zarr_url = f"{out.rstrip('/')}/{NETCDF_ZARR_NAME}" if netcdf else out
    identity = _identity(trained, pstore, series, checkpoint)
    # the saved config without credentials (differland_dist.storage.secrets)
    identity["config_json"] = json.dumps(safe_config_dict(cfg, strict=False), sort_keys=True)
    # one writer per output; beside it, so that the output holds only what it lists as its own
    lease = Lease(Location(zarr_url, oso), owner="infer", force=force,
                  file=Location(f"{zarr_url.rstrip('/')}{LEASE_FILE}", oso)).acquire()
    try:
        state = prepare_output(zarr_url, identity, pstore, series, oso, overwrite,
                               options.chunk_pixels)
        group = out_mod.open_output(zarr_url, oso)
        N, T = pstore.n_pixels, pstore.n_time
        C, n_chunks = int(group.attrs["chunk_pixels"]), int(group.attrs["n_chunks"])
        report = InferenceReport(zarr_url, N, T, n_chunks)
        nc_files = _netcdf_targets(out) if netcdf else []
        if state == "complete":
            report.already_complete = report.complete = True
            if netcdf and not all(_exists(u, oso) for u in nc_files):
                report.netcdf = _export(zarr_url, out, oso)
            else:
                report.netcdf = nc_files
            log.info("%s is already complete: nothing to do", zarr_url)
            report.wall_s = time.perf_counter() - t0
            return report
        done = out_mod.done_chunks(group)
        chunks_per_task = max(1, options.pixels_per_task // C)
        tasks = out_mod.plan_tasks(done, chunks_per_task)
        if options.max_tasks is not None:
            tasks = tasks[: options.max_tasks]
        todo_px = sum(min(k1 * C, N) - k0 * C for k0, k1 in tasks)
        log.info("%s: %s output, %d of %d chunks to compute (%d pixels x %d steps) in %d task(s) "
                 "of up to %d chunk(s)", zarr_url, state, int((~done).sum()), n_chunks, todo_px, T,
                 len(tasks), chunks_per_task)
        # the resolved file, not a run directory whose latest checkpoint may move on meanwhile
        job = {"checkpoint": trained.source, "checkpoint_storage_options": ckpt_so,
               "store": store_url, "store_storage_options": so, "out": zarr_url, "out_storage_options": oso,
               "series": list(series), "task_pixels": min(chunks_per_task * C, N),
               "read_threads": options.read_threads}
        report.setup_s = time.perf_counter() - t0
        progress = _Progress(todo_px, T)

        def on_record(rec: dict[str, Any]) -> None:
            report.tasks.append(rec)
            report.chunks_computed.extend(range(rec["k0"], rec["k1"]))
            progress.add(rec["pixels"])

        t1 = time.perf_counter()
        if tasks:
            run = _execute_local if options.executor == "local" else _execute_ray
            run(tasks, job, options, on_record)
        report.run_s = time.perf_counter() - t1
        report.chunks_computed.sort()
        t2 = time.perf_counter()
        if out_mod.done_chunks(group).all():
            lease.check()  # another writer took the output over meanwhile: do not mark it complete
            out_mod.finish(zarr_url, oso)
            report.complete = True
            if netcdf:
                report.netcdf = _export(zarr_url, out, oso)
        else:
            log.info("%s: %d chunk(s) still missing; run again to continue", zarr_url,
                     int((~out_mod.done_chunks(group)).sum()))
        report.finish_s = time.perf_counter() - t2
        report.wall_s = time.perf_counter() - t0
        log.info("inference: %d pixels in %.1f s (%.3g pixel-months/s end to end)%s",
                 report.pixels_computed, report.wall_s, report.pixel_months_per_s(),
                 "; complete" if report.complete else "")
        return report
    finally:
        lease.release()


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


def _netcdf_targets(out: str) -> list[str]:
    return [f"{out.rstrip('/')}/{n}" for n in NETCDF_FILES]


def _exists(url: str, so: dict) -> bool:
    fs, path = resolve(url, so)
    return fs.exists(path)


def _export(zarr_url: str, out: str, so: dict) -> list[str]:
    return export_netcdf(zarr_url, out, so)

