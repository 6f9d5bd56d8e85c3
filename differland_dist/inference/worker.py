"""The inference worker: one per Ray Data actor (or in the driver's process with
``executor="local"``). It loads the network once, compiles the model for one fixed task shape,
then per task reads the pixels' forcing and predictors, runs the network and DALEC, writes
whole output chunks and commits them."""

from __future__ import annotations

import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from differland_dist.data.batch import predictor_names
from differland_dist.data.rows import RowReader
from differland_dist.data.schema import PER_PIXEL_FORCING, by_pixel_name
from differland_dist.data.store import PixelStore
from differland_dist.inference.compute import (
    check_finite, compiled_forward, input_variables, pad_pixels, stack_inputs)
from differland_dist.inference.output import ChunkWriter, chunk_range
from differland_dist.runs.trained import load_trained
from differland_dist.storage.location import Location

log = logging.getLogger(__name__)


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
        self.store = PixelStore(Location(job["store"], job.get("store_storage_options")))
        self.writer = ChunkWriter(Location(job["out"], job.get("out_storage_options")))
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
        s = chunk_range(k0, k1, C, N)
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
