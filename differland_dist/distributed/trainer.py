"""The calibration loop: each step deals its patches' calls to the workers, sums their
per-patch gradients in a fixed order, applies the optax update, hands non-finite steps to
the policy, evaluates the dev patches and checkpoints.

The loop only executes decisions made elsewhere: which patches and calls
(:mod:`~differland_dist.distributed.policy`: also when to evaluate and checkpoint, which dev
network is kept, what a non-finite step leads to), what a checkpoint holds and whether a run
may resume (:mod:`~differland_dist.distributed.checkpoints`), the standardisation rule
(:class:`~differland_dist.network.standardize.Standardizer`). The parts it drives: the run
directory (:mod:`~differland_dist.runs.layout`), the Ray workers and their failure policy
(:mod:`~differland_dist.distributed.pool`), one round of calls (:mod:`~differland_dist.
distributed.gather`) and a worker's streamed patches and compiled loss
(:mod:`~differland_dist.distributed.shard`).

Determinism: the patches of step s are a slice of a permutation drawn from
``numpy.random.default_rng([seed, epoch])``, cut into calls of a fixed size that does not
depend on the number of workers; each patch's gradient is computed at a fixed shape and
the driver sums the per-patch gradients in the step's patch order. The same config and
seed therefore give the same network with 1 to 4 workers, after a resume, and after a
worker (or a whole node) was replaced.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from tqdm.auto import tqdm

from differland_dist.config import ExperimentConfig, check_against_store, resolve_epochs, steps_per_epoch
from differland_dist.data import splits
from differland_dist.data.batch import predictor_names
from differland_dist.data.store import open_store
from differland_dist.distributed import multistep
from differland_dist.distributed.checkpoints import CheckpointManager
from differland_dist.distributed.gather import Gathered, fit_standardizer, gather, ordered_sum
from differland_dist.distributed.optim import make_optimizer
from differland_dist.distributed.policy import after_step, calls, keeps, on_nonfinite, step_patches
from differland_dist.distributed.records import log_plan, log_step, step_record, timed
from differland_dist.distributed.pool import WorkerPool, check_ray_address, start_pool
from differland_dist.distributed.shard import call_shape
from differland_dist.distributed.state import TrainState, after_nonfinite, describe_nonfinite, fresh_start
from differland_dist.distributed.worker import worker_env
from differland_dist.errors import ConfigError, DifferlandError, TrainingDiverged
from differland_dist.network.mlp import init_network
from differland_dist.network.standardize import Standardizer, input_names
from differland_dist.runs.layout import RunDir
from differland_dist.storage.lease import Lease
from differland_dist.storage.location import Location
from differland_dist.storage.secrets import safe_config_dict

log = logging.getLogger(__name__)


def _same_or_inside(a: Location, b: Location) -> bool:
    """Whether ``a`` is ``b`` or below it (same filesystem kind, path prefix)."""
    pa, pb = a.fs.protocol, b.fs.protocol
    if (pa if isinstance(pa, tuple) else (pa,))[0] != (pb if isinstance(pb, tuple) else (pb,))[0]:
        return False
    x, y = a.path.rstrip("/"), b.path.rstrip("/")
    if a.local:
        x, y = os.path.realpath(x), os.path.realpath(y)
    return x == y or x.startswith(y + "/")


def training_patches(store, config: ExperimentConfig) -> tuple[np.ndarray, np.ndarray, bool]:
    """(train patches, dev patches, whether the store splits its sites by time): a store split
    by time trains on every patch and evaluates its later steps; else the store's split, the
    published run's (``data.run``) or a redraw (``data.split_seed``). Test patches are never
    read: not for training, not for selection."""
    data = config.data
    if "time_test" in store.array_names:
        return np.asarray(store.patch_ids), np.asarray(store.patch_ids), True
    split = splits.of_data(store, data)
    train, dev = splits.for_training(split, data.train_on)
    if config.training.patch_order == "fixed" and data.run is not None:
        # the published loop visits the run's batches in its index order
        train = splits.published_order(store.patch_slices, store.run_table, data.run, train)
    how = [f"data.run={data.run}"] if data.run is not None else []
    how += [f"data.train_on={data.train_on}"] if data.train_on != "train" else []
    how += [f"data.split_seed={data.split_seed}"] if data.split_seed is not None else []
    log.info("%s: %s%s", data.url, split.counts(), f" (train/dev of {', '.join(how)})" if how else "")
    return train, dev, False


def run_call_shape(config: ExperimentConfig, sizes: list[int]):
    """The compiled call's shape for training patches of ``sizes`` pixels: from the config
    and the workers' platform, never from the number of workers (a call's contents change
    its bits); see :func:`~differland_dist.distributed.shard.call_shape`."""
    rc, tc = config.ray, config.training
    platform = worker_env(rc)["JAX_PLATFORMS"].split(",")[0] or "cpu"
    per_worker_devices = max(1, int(rc.gpus_per_worker or rc.tpus_per_worker or 1))
    return call_shape(tc, sizes, per_worker_devices, platform, per_step=min(tc.patches_per_step, len(sizes)))


def open_training_store(config: ExperimentConfig, out: Location):
    """The config's store, validated (a bad store fails here, before Ray or any long work
    starts); refused if the run directory ``out`` is the store or inside it."""
    if not config.data.url:
        raise ConfigError("data.url is empty: set it in the config or with --set data.url=URL")
    store = open_store(Location(config.data.url, dict(config.data.storage_options)), validate=True)
    if _same_or_inside(out, store.location):
        raise DifferlandError(f"--out {out.url}: this is the store {config.data.url} itself "
                              "(or inside it); choose a run directory outside the store")
    return store


class Calibration:
    """One calibration run (see :func:`calibrate`): the loop over steps.

    Args:
      config: the run's config; ``out``: the run directory (a URL is a Location without options).
      resume: continue the run directory's checkpoints; ``force``: take over a stale lease.
      progress: a progress bar; ``hooks``: called as ``hook(step, calibration)`` after each step.
      placement_group: the Ray placement group the workers go into (experiments).
    """

    def __init__(self, config: ExperimentConfig, out: str | Location, *, resume: bool = False,
                 progress: bool = False, hooks: list[Callable[[int, "Calibration"], None]] | None = None,
                 force: bool = False, placement_group=None):
        # What is saved: the config without credentials (refused here if one is not known).
        self.saved_config = safe_config_dict(config)
        self.loc = out if isinstance(out, Location) else Location(out)
        self.out = self.loc.url
        self.force = force
        self._lease: Lease | None = None
        # every write checks the lease first (raises if it was lost)
        self.rundir = RunDir(self.loc, check=lambda: self._lease is not None and self._lease.check())
        self.progress = progress
        self.hooks = hooks or []
        self.store = open_training_store(config, self.loc)
        self.fingerprint = self.store.fingerprint()
        self.placement_group = placement_group
        self.train_patches, self.dev_patches, self.time_split = training_patches(self.store, config)
        if len(self.train_patches) == 0:
            raise DifferlandError(f"{config.data.url}: no training patches (split == 0)")
        check_against_store(config, self.store.n_time, self.store.steps_per_year)
        # a schedule in epochs becomes steps of this run (saved_config keeps the epochs)
        config = self.config = resolve_epochs(config, len(self.train_patches))
        # A cluster that is not there fails now, not after minutes of Ray retries.
        check_ray_address(config.ray.address)
        multistep.check_config(config)
        self.resume = resume
        self.sizes = {int(p): int(sl.stop - sl.start) for p, sl in self.store.patch_slices.items()}
        self.shape = run_call_shape(config, [self.sizes[int(p)] for p in self.train_patches])
        self.pool: WorkerPool | None = None
        self.input_names = input_names(predictor_names(config.data.predictors))
        self.net0 = init_network(jax.random.PRNGKey(config.training.seed), len(self.input_names) - 1,
                                 config.network)
        flat0, self.unravel = ravel_pytree(self.net0)
        self.flat0 = np.asarray(flat0)
        self.tx = make_optimizer(config.optimizer, config.training.steps)
        self.standardizer: Standardizer | None = None   # fitted (or restored) when the run starts
        self.checkpoints = CheckpointManager(self.rundir, config, self.saved_config, self.fingerprint,
                                             self.input_names, self.unravel, self.time_split)

    def _calls(self, patches) -> list[list[int]]:
        """``patches`` packed into this run's calls (:func:`policy.calls`)."""
        return calls(patches, self.sizes, self.shape.rows, self.shape.per_call)

    def _step_patches(self, step: int) -> list[int]:
        """The patches of step ``step`` (0-based; :func:`policy.step_patches`)."""
        tc = self.config.training
        order = tc.seed if tc.order_seed is None else tc.order_seed
        return step_patches(self.train_patches, step, tc.patches_per_step, order, tc.patch_order == "fixed")

    @property
    def metrics(self) -> list[dict]:
        """Every record of this run (``metrics.jsonl``'s, and this session's)."""
        return self.rundir.metrics

    @property
    def restarts(self) -> int:
        return 0 if self.pool is None else self.pool.restarts

    # -- workers ---------------------------------------------------------------------------
    def _call(self, method: str, jobs: dict[int, tuple], kwargs: dict[int, dict] | None = None):
        return self.pool.call(method, jobs, kwargs)

    def worker_pids(self) -> list[int]:
        return [r["pid"] for r in self.worker_info()]

    def worker_info(self) -> list[dict]:
        """Per worker: pid, node id, host, cached patches and cache counters, devices."""
        return self.pool.info()

    def _gather(self, patches, flat, with_grad, test, prefetch: list[int] | None = None) -> Gathered:
        """One round of ``patches``' calls on the workers (:func:`gather.gather`)."""
        mean, std = (np.asarray(x).astype(np.float32) for x in self.standardizer[1:])
        ahead = prefetch if (prefetch and self.config.data.cache_bytes) else ()
        return gather(self.pool, self._calls, patches, flat, mean, std, with_grad, test, ahead)

    # -- the run --------------------------------------------------------------------------
    def run(self) -> TrainState:
        """The whole run, holding the run directory's lease (a second writer is refused)."""
        with Lease(self.loc, owner="calibrate", force=self.force) as lease:
            self._lease = lease
            try:
                return self._run()
            finally:
                self._lease = None

    def _run(self) -> TrainState:
        found = self.checkpoints.begin(self.resume)
        if found is not None:
            state, self.standardizer = self.checkpoints.restore(*found, self.tx.init(self.net0))
            if state.step >= self.config.training.steps:
                # A finished run: a rerun computes nothing (no cluster); a writer killed before
                # network.npz (after latest.json) left it to be written from the checkpoint.
                if self.rundir.final_exists():
                    self.rundir.load_metrics(state.step)
                else:
                    self.rundir.reset_metrics(state.step)
                    self.checkpoints.save(state, self.standardizer, final=True)
                log.info("%s is complete at step %d: nothing to do", self.out, state.step)
                return state
        t0 = time.perf_counter()
        self.pool = start_pool(self.config, self.shape, self.placement_group)
        if found is not None:
            self.rundir.reset_metrics(state.step)
            log.info("resuming %s at step %d", self.out, state.step)
        else:
            self.rundir.reset_metrics(None)
            self.standardizer = fit_standardizer(self.pool, self.train_patches, self.input_names)
            state = TrainState(self.flat0.copy(), self.tx.init(self.net0), 0)
            self.checkpoints.start(state)
        tc = self.config.training
        log_plan(tc, self.config.ray.workers, time.perf_counter() - t0, len(self.train_patches),
                 len(self.dev_patches), len(self._calls(self._step_patches(0))), self.shape)
        return self._loop(state)

    def _loop(self, state: TrainState) -> TrainState:
        """Steps until ``training.steps``, each followed by what :func:`policy.after_step` says."""
        tc, tx, unravel = self.config.training, self.tx, self.unravel

        @jax.jit
        def apply(flat, grad, opt_state, lr_scale):
            return multistep.apply_update(tx, unravel, flat, grad, opt_state, lr_scale)

        bar = None
        if self.progress:
            bar = tqdm(total=tc.steps, initial=state.step, desc="calibrate", unit="step", dynamic_ncols=True)
        try:
            while state.step < tc.steps:
                if tc.updates_per_call > 1:  # n updates in one worker call, n <= K
                    state = self._train_updates(state, multistep.chunk_length(
                        state.step, tc.steps, tc.updates_per_call, tc.eval_every, tc.checkpoint_every), bar)
                else:
                    state = self._train_step(state, apply, bar)
                for h in self.hooks:
                    h(state.step, self)
                self._after_step(state)
        finally:
            if bar is not None:
                bar.close()
            self.shutdown()
        return state

    def _after_step(self, state: TrainState) -> None:
        tc = self.config.training
        then = after_step(state.step, tc.steps, tc.eval_every, tc.checkpoint_every)
        if then.evaluate:
            dev = self._evaluate(state)
            best = self.checkpoints.best
            if keeps(tc.keep, dev, None if best is None else best.dev_loss):
                self.checkpoints.offer(state, dev)
        if then.checkpoint:
            self.checkpoints.save(state, self.standardizer, final=then.done)
        else:
            self.rundir.flush_metrics()

    # -- one step ---------------------------------------------------------------------------
    def _train_step(self, state: TrainState, apply, bar) -> TrainState:
        tc = self.config.training
        t_step = time.perf_counter()
        patches = self._step_patches(state.step)
        nxt = self._step_patches(state.step + 1) if state.step + 1 < tc.steps else []
        if self.pool is None:  # the driver logic alone (tests replace _gather)
            got = Gathered(*self._gather(patches, state.flat, True, False))
        else:
            got = Gathered(*self._gather(patches, state.flat, True, False, nxt))
        t1 = time.perf_counter()
        # Fixed-order sums: the step's call order, whatever worker computed each call.
        grad, terms = ordered_sum(got.by_call)
        finite = math.isfinite(terms.get("loss", float("nan"))) and bool(np.all(np.isfinite(grad)))
        rec = step_record(state, terms, got, patches=len(patches), grad=grad, finite=finite,
                          epoch=state.step // steps_per_epoch(len(self.train_patches), tc.patches_per_step) + 1,
                          workers=0 if self.pool is None else len(self.pool))
        if finite:
            flat, opt_state = apply(jnp.asarray(state.flat), jnp.asarray(grad), state.opt_state,
                                    jnp.asarray(state.lr_scale, jnp.float32))
            state = dataclasses.replace(state, flat=np.asarray(flat), opt_state=opt_state,
                                        step=state.step + 1, nonfinite_in_a_row=0)
        else:
            state = self._nonfinite(state, rec["nonfinite"])
        self.rundir.append(timed(rec, t_step, t1))
        if bar is not None:
            bar.n = state.step
            bar.set_postfix(loss=f"{rec.get('loss', float('nan')):.4g}",
                            pm_s=f"{rec['pixel_months_per_s']:.3g}", refresh=False)
            bar.refresh()
        log_step(rec, tc.steps, finite)
        return state

    def _train_updates(self, state: TrainState, n: int, bar) -> TrainState:
        """``n`` steps in one call of the single worker (:func:`multistep.run_chunk`); the same
        records and non-finite policy as ``n`` calls of :meth:`_train_step`."""
        state, recs, bad = multistep.run_chunk(self._call, self._calls, state, n, self.config.training,
                                               self.train_patches, self.sizes, self.store.n_time,
                                               self.standardizer)
        for rec in recs:
            self.rundir.append(rec)
        if bad is not None:
            state = self._nonfinite(state, bad)
        if bar is not None:
            bar.n = state.step
            bar.refresh()
        steps = self.config.training.steps
        log.log(logging.INFO if bad is not None or state.step % max(1, steps // 20) < n else logging.DEBUG,
                "step %d/%d loss %.6g (%d updates in one call, %.3g pixel-months/s)", state.step,
                steps, recs[-1].get("loss", float("nan")), n, recs[-1]["pixel_months_per_s"])
        return state

    def _nonfinite(self, state: TrainState, what: str) -> TrainState:
        """Execute :func:`policy.on_nonfinite`'s decision; ``what``: which values were not
        finite (:func:`describe_nonfinite`)."""
        tc = self.config.training
        last = self.checkpoints.last  # the last checkpoint or start: what a rollback returns to
        d = on_nonfinite(tc.on_nonfinite, state.nonfinite_in_a_row, tc.max_nonfinite, state.lr_scale,
                         state.lr_scale if last is None else last.lr_scale, tc.lr_reduction)
        if d.action == "stop":
            raise TrainingDiverged(f"{d.in_a_row} consecutive steps with a non-finite loss or gradient "
                                   f"(training.max_nonfinite = {tc.max_nonfinite}); last step: {what}")
        log.warning("step %d: %s: not applied; %s (%d in a row)", state.step + 1, what, d.action, d.in_a_row)
        if d.action != "reinitialise":
            return after_nonfinite(d, state, last)
        fresh = fresh_start(self.config, len(self.input_names) - 1, state, d.in_a_row)
        log.warning("fresh start %d from step 0 (training.on_nonfinite = reinitialise)", fresh.reinitialised)
        self.checkpoints.start(fresh)  # keep=best_dev: a network of the abandoned start is not kept
        return fresh

    def _evaluate(self, state: TrainState) -> float | None:
        """Dev loss of the current network (recorded in metrics.jsonl); None without dev patches."""
        if len(self.dev_patches) == 0:
            return None
        patches = [int(p) for p in self.dev_patches]
        got = Gathered(*self._gather(patches, state.flat, False, True))
        _, terms = ordered_sum(got.by_call, with_grad=False)
        self.rundir.append({"step": state.step, "split": "dev", **terms, "patches": len(patches),
                            "pixel_months": got.pixel_months, "time_s": got.wall})
        log.info("step %d dev loss %.6g (%d patches)", state.step, terms.get("loss", float("nan")), len(patches))
        return terms.get("loss")

    def shutdown(self):
        if self.pool is not None:
            self.pool.shutdown()


def calibrate(config: ExperimentConfig, out: str | Location, *, resume: bool = False, progress: bool = False,
              hooks=None, force: bool = False, placement_group=None):
    """Train the shared network on every training patch of ``config.data.url``.

    Writes ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` and ``network.npz`` into the
    run directory ``out`` (a :class:`~differland_dist.storage.location.Location`, or a local
    path or URL that needs no options), holding its lease (:mod:`differland_dist.storage.lease`;
    ``force`` takes over a stale one). Returns the final :class:`TrainState` and the
    :class:`Calibration` (metrics, network unravel function).
    """
    cal = Calibration(config, out, resume=resume, progress=progress, hooks=hooks, force=force,
                      placement_group=placement_group)
    state = cal.run()
    return state, cal
