"""The calibration loop: each step deals its patches' calls to the workers, sums their
per-patch gradients in a fixed order, applies the optax update, handles non-finite steps,
evaluates the dev patches and checkpoints.

The parts it drives: the run directory (:mod:`~differland_dist.distributed.rundir`), the
Ray workers and their failure policy (:mod:`~differland_dist.distributed.pool`), which
worker computes which patches (:mod:`~differland_dist.distributed.policy`), and a worker's
streamed patches and compiled loss (:mod:`~differland_dist.distributed.shard`).

Determinism: the patches of step s are a slice of a permutation drawn from
``numpy.random.default_rng([seed, epoch])``, cut into calls of a fixed size that does not
depend on the number of workers; each patch's gradient is computed at a fixed shape and
the driver sums the per-patch gradients in the step's patch order. The same config and
seed therefore give the same network with 1 to 4 workers, after a resume, and after a
worker (or a whole node) was replaced.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from tqdm.auto import tqdm

from differland_dist.config import (ExperimentConfig, check_against_store, resolve_epochs,
                                    steps_per_epoch, with_defaults)
from differland_dist.data import splits
from differland_dist.data.batch import predictor_names
from differland_dist.data.store import open_store
from differland_dist.errors import CheckpointError, ConfigError, DifferlandError, TrainingDiverged
from differland_dist.distributed import multistep
from differland_dist.distributed.optim import make_optimizer, state_from_arrays, state_to_arrays
from differland_dist.distributed.policy import calls, deal, on_nonfinite, step_patches  # noqa: F401 (re-exported)
from differland_dist.distributed.pool import WorkerPool, check_ray_address, connect
from differland_dist.distributed.rundir import RunDir
from differland_dist.distributed.shard import call_shape
from differland_dist.distributed.worker import worker_env
from differland_dist.storage.lease import Lease
from differland_dist.storage.location import Location
from differland_dist.network.mlp import init_network, network_from_arrays, network_to_arrays
from differland_dist.storage.secrets import safe_config_dict

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    flat: np.ndarray                 # network parameters, flattened (float32)
    opt_state: Any                   # optax state (pytree of jax arrays)
    step: int                        # steps completed
    lr_scale: float = 1.0            # lowered by on_nonfinite = reduce_lr / rollback
    nonfinite_in_a_row: int = 0
    skipped: list[int] = field(default_factory=list)
    reinitialised: int = 0           # fresh starts by on_nonfinite = reinitialise (seeds the next)


def describe_nonfinite(loss: float, grad: np.ndarray) -> str:
    """Which values are not finite, e.g. "loss is +inf; gradient has 3 NaN of 1200 values"."""
    parts = []
    if not math.isfinite(loss):
        parts.append(f"loss is {'NaN' if math.isnan(loss) else '+inf' if loss > 0 else '-inf'}")
    g = np.asarray(grad)
    counts = [(int(np.isnan(g).sum()), "NaN"), (int(np.isposinf(g).sum()), "+inf"),
              (int(np.isneginf(g).sum()), "-inf")]
    bad = [f"{n} {what}" for n, what in counts if n]
    if bad:
        parts.append(f"gradient has {', '.join(bad)} of {g.size} values")
    return "; ".join(parts) or "all finite"


def _same_or_inside(a: Location, b: Location) -> bool:
    """Whether ``a`` is ``b`` or below it (same filesystem kind, path prefix)."""
    pa, pb = a.fs.protocol, b.fs.protocol
    if (pa if isinstance(pa, tuple) else (pa,))[0] != (pb if isinstance(pb, tuple) else (pb,))[0]:
        return False
    x, y = a.path.rstrip("/"), b.path.rstrip("/")
    if a.local:
        x, y = os.path.realpath(x), os.path.realpath(y)
    return x == y or x.startswith(y + "/")


class Calibration:
    """One calibration run (see :func:`calibrate`): the loop over steps."""

    def __init__(self, config: ExperimentConfig, out_dir: str, *, resume: bool = False,
                 progress: bool = False, hooks: list[Callable[[int, "Calibration"], None]] | None = None,
                 out_storage_options: dict | None = None, force: bool = False,
                 placement_group=None):
        if not config.data.url:
            raise ConfigError("data.url is empty: set it in the config or with --set data.url=URL")
        self.config = config
        # What is saved: the config without credentials (refused here if one is not known).
        self.saved_config = safe_config_dict(config)
        self.out = out_dir.rstrip("/")
        self.out_so = out_storage_options or {}
        self.loc = Location(self.out, self.out_so)
        self.force = force
        self._lease: Lease | None = None
        self._best: tuple[int, float, np.ndarray] | None = None  # (step, dev loss, flat) for keep=best_dev
        self.rundir = RunDir(self.out, self.out_so, check=self._check_lease)
        self.progress = progress
        self.hooks = hooks or []
        # Validation first: a bad store fails here, before Ray or any long work starts.
        self.store = open_store(Location(config.data.url, dict(config.data.storage_options)), validate=True)
        self.fingerprint = self.store.fingerprint()
        if _same_or_inside(self.loc, self.store.location):
            raise DifferlandError(f"--out {self.out}: this is the store {config.data.url} itself "
                                  "(or inside it); choose a run directory outside the store")
        self.placement_group = placement_group
        self.time_split = "time_test" in self.store.array_names
        if self.time_split:  # sites split by time: every patch trains, its later steps are dev
            self.train_patches = np.asarray(self.store.patch_ids)
            self.dev_patches = np.asarray(self.store.patch_ids)
        else:
            # the store's split, the published run's (data.run) or a redraw (data.split_seed)
            split = splits.of_data(self.store, config.data)
            # test patches are never read: not for training, not for selection
            self.train_patches, self.dev_patches = splits.for_training(split, config.data.train_on)
            if config.training.patch_order == "fixed" and config.data.run is not None:
                # the published loop visits the run's batches in its index order
                self.train_patches = splits.published_order(self.store.patch_slices, self.store.run_table,
                                                            config.data.run, self.train_patches)
            how = [f"data.run={config.data.run}"] if config.data.run is not None else []
            how += [f"data.train_on={config.data.train_on}"] if config.data.train_on != "train" else []
            how += [f"data.split_seed={config.data.split_seed}"] if config.data.split_seed is not None else []
            log.info("%s: %s%s", config.data.url, split.counts(),
                     f" (train/dev of {', '.join(how)})" if how else "")
        if len(self.train_patches) == 0:
            raise DifferlandError(f"{config.data.url}: no training patches (split == 0)")
        self.T = self.store.n_time
        check_against_store(config, self.T, self.store.steps_per_year)
        # a schedule in epochs becomes steps of this run (saved_config keeps the epochs)
        config = self.config = resolve_epochs(config, len(self.train_patches))
        # A cluster that is not there fails now, not after minutes of Ray retries.
        check_ray_address(config.ray.address)
        multistep.check_config(config)
        self.resume = resume
        self.sizes = {int(p): int(sl.stop - sl.start) for p, sl in self.store.patch_slices.items()}
        self.patch_size = max(self.sizes.values())
        self.shape = self._call_shape()
        self.pool: WorkerPool | None = None

    def _call_shape(self):
        """The compiled call's shape: from the config, the training patches' sizes and the
        workers' platform, never from the number of workers (a call's contents change its
        bits); see :func:`~differland_dist.distributed.shard.call_shape`."""
        rc, tc = self.config.ray, self.config.training
        platform = worker_env(rc)["JAX_PLATFORMS"].split(",")[0] or "cpu"
        per_worker_devices = max(1, int(rc.gpus_per_worker or rc.tpus_per_worker or 1))
        sizes = [self.sizes[int(p)] for p in self.train_patches]
        return call_shape(tc, sizes, per_worker_devices, platform,
                          per_step=min(tc.patches_per_step, len(self.train_patches)))

    def _calls(self, patches) -> list[list[int]]:
        """``patches`` packed into this run's calls (:func:`policy.calls`)."""
        return calls(patches, self.sizes, self.shape.rows, self.shape.per_call)

    @property
    def metrics(self) -> list[dict]:
        """Every record of this run (``metrics.jsonl``'s, and this session's)."""
        return self.rundir.metrics

    @property
    def restarts(self) -> int:
        return 0 if self.pool is None else self.pool.restarts

    # -- run directory ---------------------------------------------------------------------
    def _ckpt_meta(self, state: TrainState) -> dict:
        return {"kind": "training", "step": state.step, "config": self.saved_config,
                "data_fingerprint": self.fingerprint, "lr_scale": state.lr_scale,
                "nonfinite_in_a_row": state.nonfinite_in_a_row, "skipped": state.skipped,
                "reinitialised": state.reinitialised,
                "rng": {"kind": "numpy.default_rng([seed, epoch])", "seed": self.config.training.seed,
                        "next_step": state.step},
                "network": dataclasses.asdict(self.config.network),
                "predictor_names": list(self.std_names), "time_split": self.time_split}

    def _network_arrays(self, flat: np.ndarray) -> dict:
        arrays = network_to_arrays(self._unravel(flat))
        arrays["std_mean"], arrays["std_std"] = self.std_mean, self.std_std
        return arrays

    def _save_checkpoint(self, state: TrainState, final: bool = False):
        arrays = self._network_arrays(state.flat)
        arrays.update(state_to_arrays(state.opt_state, "opt/"))
        meta = self._ckpt_meta(state)
        network = None
        if self._best is not None:
            # the best network so far travels with every checkpoint, so a resumed run selects
            # among all evaluations, not only those after the restart
            step, loss, flat = self._best
            best = self._network_arrays(flat)
            if final:
                network = (best, {**meta, "selected": {"by": "best_dev", "step": step, "dev_loss": loss}})
            meta["best_dev"] = {"step": step, "dev_loss": loss}
            arrays.update({f"best/{k}": v for k, v in best.items()})
        url = self.rundir.save_checkpoint(state.step, arrays, meta, final=final, network=network)
        self._last_ckpt = (state.step, state.flat.copy(), state.opt_state, state.lr_scale)
        log.info("checkpoint %s", url)

    def _check_lease(self):
        if self._lease is not None:
            self._lease.check()

    @staticmethod
    def _validate_ckpt(arrays: dict, meta: dict, url: str) -> None:
        missing = [k for k in ("std_mean", "std_std") if k not in arrays]
        if missing or not isinstance(meta.get("step"), int) or "config" not in meta:
            raise CheckpointError(f"{url}: incomplete training checkpoint (missing "
                                  f"{missing or 'step/config'})")

    # -- workers ---------------------------------------------------------------------------
    def _start_workers(self):
        rc = self.config.ray
        runtime_env = {k: v for k, v in rc.runtime_env.items() if k != "env_vars"}
        runtime_env["env_vars"] = worker_env(rc)
        connect(rc, runtime_env)
        self.pool = WorkerPool(self.config, runtime_env, tuple(self.shape), self.placement_group)
        self.pool.start(rc.workers)

    def _call(self, method: str, jobs: dict[int, tuple], kwargs: dict[int, dict] | None = None):
        return self.pool.call(method, jobs, kwargs)

    def worker_pids(self) -> list[int]:
        return [r["pid"] for r in self.pool.info()]

    def worker_info(self) -> list[dict]:
        """Per worker: pid, node id, host, cached patches and cache counters, devices."""
        return self.pool.info()

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
        cfg, tc = self.config, self.config.training
        if not self.resume and self.rundir.has_checkpoints():
            raise DifferlandError(f"{self.out} already holds checkpoints: pass --resume to "
                                  "continue it, or choose another --out")
        # We hold the lease: temporary files here are a killed writer's, never a live one's.
        self.rundir.remove_stale_temp_files()
        found = self.rundir.find_resume(self._validate_ckpt) if self.resume else None
        ckpt = None
        if found is not None:
            resume_from, ckpt = found
            self._check_resumable(ckpt[1], resume_from)
        self.rundir.write_config(self.saved_config)

        names = predictor_names(cfg.data.predictors)
        self.std_names = ["hemisphere"] + names
        net0 = init_network(jax.random.PRNGKey(tc.seed), len(names), cfg.network)
        flat0, self._unravel = ravel_pytree(net0)
        tx = make_optimizer(cfg.optimizer, tc.steps)

        W = cfg.ray.workers
        if ckpt is not None and int(ckpt[1]["step"]) >= tc.steps and self.rundir.final_exists():
            # A finished run: a rerun is a no-op (no cluster, no recomputation).
            arrays, meta = ckpt
            self.std_mean, self.std_std = arrays["std_mean"], arrays["std_std"]
            self.rundir.load_metrics(int(meta["step"]))
            flat = np.asarray(ravel_pytree(network_from_arrays(arrays))[0])
            log.info("%s is complete at step %d: nothing to do", self.out, meta["step"])
            return TrainState(flat, state_from_arrays(tx.init(net0), arrays, "opt/"), int(meta["step"]),
                              float(meta.get("lr_scale", 1.0)))
        t0 = time.perf_counter()
        self._start_workers()

        if ckpt is not None:
            arrays, meta = ckpt
            self.std_mean, self.std_std = arrays["std_mean"], arrays["std_std"]
            flat = np.asarray(ravel_pytree(network_from_arrays(arrays))[0])
            opt_state = state_from_arrays(tx.init(net0), arrays, "opt/")
            state = TrainState(flat, opt_state, int(meta["step"]), float(meta.get("lr_scale", 1.0)),
                               int(meta.get("nonfinite_in_a_row", 0)), list(meta.get("skipped", [])),
                               int(meta.get("reinitialised", 0)))
            self.rundir.reset_metrics(state.step)
            self._last_ckpt = (state.step, state.flat.copy(), state.opt_state, state.lr_scale)
            if tc.keep == "best_dev" and "best_dev" in meta:
                best = {k[len("best/"):]: v for k, v in arrays.items() if k.startswith("best/")}
                self._best = (int(meta["best_dev"]["step"]), float(meta["best_dev"]["dev_loss"]),
                              np.asarray(ravel_pytree(network_from_arrays(best))[0]))
            log.info("resuming %s at step %d", self.out, state.step)
        else:
            self.rundir.reset_metrics(None)
            self.std_mean, self.std_std = self._standardisation()
            state = TrainState(np.asarray(flat0), tx.init(net0), 0)
            self._last_ckpt = (0, state.flat.copy(), state.opt_state, 1.0)
        n_step = min(tc.patches_per_step, len(self.train_patches))
        n_calls = len(self._calls(step_patches(self.train_patches, 0, tc.patches_per_step,
                                               tc.seed if tc.order_seed is None else tc.order_seed,
                                               tc.patch_order == "fixed")))
        log.info("%d workers ready in %.1fs: %d train / %d dev patches, %d steps of %d patches "
                 "in ~%d calls of %d pixels (up to %d patches each)", W, time.perf_counter() - t0,
                 len(self.train_patches), len(self.dev_patches), tc.steps, n_step, n_calls,
                 self.shape.rows, self.shape.segments)
        if n_calls < W:
            log.warning("a step has %d call(s) of %d pixels for %d workers: %d worker(s) idle; "
                        "raise training.patches_per_step or lower training.pixels_per_call",
                        n_calls, self.shape.rows, W, W - n_calls)

        @jax.jit
        def apply(flat, grad, opt_state, lr_scale):
            return multistep.apply_update(tx, self._unravel, flat, grad, opt_state, lr_scale)

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
                done = state.step >= tc.steps
                if (tc.eval_every and state.step % tc.eval_every == 0) or done:
                    dev = self._evaluate(state)
                    if tc.keep == "best_dev" and dev is not None and math.isfinite(dev) and (
                            self._best is None or dev < self._best[1]):
                        self._best = (state.step, dev, state.flat.copy())
                if (tc.checkpoint_every and state.step % tc.checkpoint_every == 0) or done:
                    self._save_checkpoint(state, final=done)
                else:
                    self.rundir.flush_metrics()
        finally:
            if bar is not None:
                bar.close()
            self.shutdown()
        return state

    def _check_resumable(self, meta: dict, src: str):
        if meta.get("data_fingerprint") != self.fingerprint:
            raise CheckpointError(f"{src}: made on different data (fingerprint "
                                  f"{meta.get('data_fingerprint')} != {self.fingerprint})")
        # a key added since the checkpoint was written counts as its default
        saved = json.loads(json.dumps(with_defaults(meta["config"])))
        mine = json.loads(json.dumps(self.saved_config))
        # Only the number of steps, cadences, the cluster, how the data is reached (storage
        # options: credentials, endpoints) and the worker's cache may change on resume.
        for cfg_ in (saved, mine):
            cfg_.get("data", {}).pop("storage_options", None)
            cfg_.get("data", {}).pop("cache_bytes", None)
            cfg_.get("data", {}).pop("cache", None)
        for sec, keys in (("training", ("steps", "eval_every", "checkpoint_every")), ("ray", None)):
            if keys is None:
                saved.pop(sec, None), mine.pop(sec, None)
            else:
                for k in keys:
                    saved[sec].pop(k, None), mine[sec].pop(k, None)
        if json.dumps(saved, sort_keys=True) != json.dumps(mine, sort_keys=True):
            diff = [k for k in mine if json.dumps(mine[k], sort_keys=True) != json.dumps(saved.get(k), sort_keys=True)]
            raise CheckpointError(f"{src}: config differs from the checkpoint's in {diff}; "
                                  "only training.steps/eval_every/checkpoint_every, ray and the data "
                                  "cache may change on resume")

    def _standardisation(self):
        """Training pixels' mean and std of [hemisphere, predictors...], from per-patch sums
        added in patch order (independent of the number of workers)."""
        train = sorted(int(p) for p in self.train_patches)
        W = len(self.pool)
        jobs = {w: (train[w::W],) for w in range(W) if train[w::W]}
        res = self._call("predictor_sums", jobs)
        per_patch = {p: v for r in res.values() for p, v in r.items()}
        n, s, ss = 0, 0.0, 0.0
        for p in sorted(per_patch):
            k, a, b = per_patch[p]
            n, s, ss = n + k, s + a, ss + b
        mean = s / n
        var = np.maximum(ss / n - mean**2, 0.0)
        std = np.sqrt(var)
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        return mean.astype(np.float64), std.astype(np.float64)

    def _gather(self, patches, flat, with_grad, test, prefetch: list[int] | None = None):
        """Per call of ``patches``, in call order: (terms, gradient), the calls dealt to the
        workers; ``prefetch``: the patches that come next (each worker starts reading those
        of its next calls)."""
        # imported here: Ray loads only once a cluster is joined (distributed/pool.py)
        import ray

        W = len(self.pool)
        ref = ray.put(flat)
        mean, std = self.std_mean.astype(np.float32), self.std_std.astype(np.float32)
        cl = self._calls(patches)
        dealt = deal(len(cl), W)
        ahead = {}
        if prefetch and self.config.data.cache_bytes:
            nxt = self._calls(prefetch)
            ahead = {w: [p for c in idx for p in nxt[c]] for w, idx in deal(len(nxt), W).items()}
        jobs = {w: (ref, [cl[c] for c in idx], mean, std, with_grad, test) for w, idx in dealt.items()}
        kwargs = {w: {"prefetch": ahead[w]} for w in dealt if ahead.get(w)}
        t0 = time.perf_counter()
        res = self._call("compute", jobs, kwargs)
        wall = time.perf_counter() - t0
        by_call: list = [None] * len(cl)
        compute_s = 0.0
        pm = 0
        for w, (items, secs, pms) in res.items():
            compute_s = max(compute_s, secs)
            pm += pms
            for c, (ids, terms, grad) in zip(dealt[w], items):
                if list(ids) != cl[c]:
                    raise DifferlandError(f"worker {w} answered call {c} with patches {list(ids)}, "
                                          f"expected {cl[c]}")
                by_call[c] = (terms, grad)
        self._last_compute = {w: r[1] for w, r in res.items()}
        self._last_calls = [len(dealt.get(w, ())) for w in range(W)]
        return by_call, wall, compute_s, pm

    def _train_step(self, state: TrainState, apply, bar) -> TrainState:
        tc = self.config.training
        t_step = time.perf_counter()
        order = tc.seed if tc.order_seed is None else tc.order_seed
        fixed = tc.patch_order == "fixed"
        patches = step_patches(self.train_patches, state.step, tc.patches_per_step, order, fixed)
        nxt = (step_patches(self.train_patches, state.step + 1, tc.patches_per_step, order, fixed)
               if state.step + 1 < tc.steps else [])
        if self.pool is None:  # the driver logic alone (tests replace _gather)
            by_call, wall, compute_s, pm = self._gather(patches, state.flat, True, False)
        else:
            by_call, wall, compute_s, pm = self._gather(patches, state.flat, True, False, nxt)
        t1 = time.perf_counter()
        # Fixed-order sums: the step's call order, whatever worker computed each call.
        grad = np.zeros_like(by_call[0][1], dtype=np.float32)
        terms: dict[str, float] = {}
        for t, g in by_call:
            grad = grad + g
            for k, v in t.items():
                terms[k] = terms.get(k, 0.0) + v
        loss = terms.get("loss", float("nan"))
        finite = math.isfinite(loss) and bool(np.all(np.isfinite(grad)))
        rec = {"step": state.step + 1, "split": "train", **terms, "patches": len(patches),
               "epoch": state.step // steps_per_epoch(len(self.train_patches), tc.patches_per_step) + 1,
               "pixel_months": pm, "lr_scale": state.lr_scale, "applied": finite,
               "workers": 0 if self.pool is None else len(self.pool), "calls": len(by_call),
               "time_compute_s": compute_s, "time_comm_s": max(wall - compute_s, 0.0)}
        if self.pool is not None:
            secs = list(getattr(self, "_last_compute", {}).values())
            rec["time_compute_min_s"] = min(secs) if secs else 0.0
            rec["worker_calls"] = list(getattr(self, "_last_calls", []))
        if not finite:
            rec["nonfinite"] = describe_nonfinite(loss, grad)
        if finite:
            flat, opt_state = apply(jnp.asarray(state.flat), jnp.asarray(grad), state.opt_state,
                                    jnp.asarray(state.lr_scale, jnp.float32))
            state = dataclasses.replace(state, flat=np.asarray(flat), opt_state=opt_state,
                                        step=state.step + 1, nonfinite_in_a_row=0)
        else:
            state = self._nonfinite(state, rec["nonfinite"])
        rec["time_driver_s"] = time.perf_counter() - t1
        rec["time_step_s"] = time.perf_counter() - t_step
        rec["pixel_months_per_s"] = pm / max(rec["time_step_s"], 1e-9)
        self.rundir.append(rec)
        if bar is not None:
            bar.n = state.step
            bar.set_postfix(loss=f"{loss:.4g}", pm_s=f"{rec['pixel_months_per_s']:.3g}", refresh=False)
            bar.refresh()
        every = max(1, tc.steps // 20)
        log.log(logging.INFO if rec["step"] % every == 0 or rec["step"] == 1 or not finite else logging.DEBUG,
                "step %d/%d loss %.6g (%d patches, %.3g pixel-months/s)%s", rec["step"], tc.steps,
                 loss, len(patches), rec["pixel_months_per_s"], "" if finite else " NOT APPLIED")
        return state

    def _train_updates(self, state: TrainState, n: int, bar) -> TrainState:
        """``n`` steps in one call of the single worker (:mod:`.multistep`); the same records
        and non-finite policy as ``n`` calls of :meth:`_train_step`."""
        tc = self.config.training
        order = tc.seed if tc.order_seed is None else tc.order_seed

        def step_calls(i):
            ps = step_patches(self.train_patches, state.step + i, tc.patches_per_step, order)
            return ps, self._calls(ps)

        plan = multistep.plan(step_calls, n)
        ahead = [p for i in range(n, min(2 * n, tc.steps - state.step)) for p in step_calls(i)[0]]
        t0 = time.perf_counter()
        job = (state.flat, multistep.state_leaves(state.opt_state), state.lr_scale, plan.calls,
               plan.last, self.std_mean.astype(np.float32), self.std_std.astype(np.float32))
        res = multistep.Result(*self._call("update", {0: job}, {0: {"prefetch": ahead}})[0])
        wall, t1 = time.perf_counter() - t0, time.perf_counter()
        good = res.finite.index(False) if res.bad_grad is not None else n
        for i, terms in enumerate(multistep.step_terms(plan, res.terms)[:good + 1]):
            pm = sum(self.sizes[p] for p in plan.patches[i]) * self.T
            rec = {"step": state.step + i + 1, "split": "train", **terms, "patches": len(plan.patches[i]),
                   "pixel_months": pm, "lr_scale": state.lr_scale, "applied": i < good, "workers": 1,
                   "calls": plan.n_calls[i],
                   "time_compute_s": res.seconds / n, "time_comm_s": max(wall - res.seconds, 0.0) / n,
                   "updates_per_call": n}
            if i == good:
                rec["nonfinite"] = describe_nonfinite(terms.get("loss", float("nan")), res.bad_grad)
            rec["time_driver_s"] = (time.perf_counter() - t1) / n
            rec["time_step_s"] = (time.perf_counter() - t0) / n
            rec["pixel_months_per_s"] = pm / max(rec["time_step_s"], 1e-9)
            self.rundir.append(rec)
        opt_state = multistep.state_of_leaves(state.opt_state, res.opt_leaves)
        state = dataclasses.replace(state, flat=res.flat, opt_state=opt_state, step=state.step + good,
                                    nonfinite_in_a_row=0 if good else state.nonfinite_in_a_row)
        if good < n:
            state = self._nonfinite(state, rec["nonfinite"])
        if bar is not None:
            bar.n = state.step
            bar.refresh()
        log.log(logging.INFO if good < n or state.step % max(1, tc.steps // 20) < n else logging.DEBUG,
                "step %d/%d loss %.6g (%d updates in one call, %.3g pixel-months/s)", state.step,
                tc.steps, rec.get("loss", float("nan")), n, rec["pixel_months_per_s"])
        return state

    def _nonfinite(self, state: TrainState, what: str) -> TrainState:
        """Execute :func:`policy.on_nonfinite`'s decision; ``what``: which values were not
        finite (:func:`describe_nonfinite`)."""
        tc = self.config.training
        last = getattr(self, "_last_ckpt", None)  # set once the run starts; rollback needs it
        d = on_nonfinite(tc.on_nonfinite, state.nonfinite_in_a_row, tc.max_nonfinite, state.lr_scale,
                         state.lr_scale if last is None else last[3], tc.lr_reduction)
        if d.action == "stop":
            raise TrainingDiverged(f"{d.in_a_row} consecutive steps with a non-finite loss or gradient "
                                   f"(training.max_nonfinite = {tc.max_nonfinite}); last step: {what}")
        log.warning("step %d: %s: not applied; %s (%d in a row)", state.step + 1, what, d.action, d.in_a_row)
        if d.action == "skip":
            return dataclasses.replace(state, step=state.step + 1, nonfinite_in_a_row=d.in_a_row,
                                       skipped=state.skipped + [state.step + 1])
        if d.action == "reduce_lr":
            return dataclasses.replace(state, lr_scale=d.lr_scale, nonfinite_in_a_row=d.in_a_row)
        if d.action == "reinitialise":
            return self._reinitialise(state, d.in_a_row)
        step, flat, opt_state, _ = last
        return TrainState(flat.copy(), opt_state, step, d.lr_scale, d.in_a_row, state.skipped,
                          state.reinitialised)

    def _reinitialise(self, state: TrainState, in_a_row: int) -> TrainState:
        """A fresh network (key: training.seed folded with the count of fresh starts, so
        every start differs and a resumed run draws the same) and optimizer, from step 0:
        the published restart when an epoch's loss is NaN (``calibration.py``)."""
        cfg = self.config
        n = state.reinitialised + 1
        key = jax.random.fold_in(jax.random.PRNGKey(cfg.training.seed), n)
        net = init_network(key, len(self.std_names) - 1, cfg.network)
        flat = np.asarray(ravel_pytree(net)[0])
        opt_state = make_optimizer(cfg.optimizer, cfg.training.steps).init(net)
        log.warning("fresh start %d from step 0 (training.on_nonfinite = reinitialise)", n)
        self._last_ckpt = (0, flat.copy(), opt_state, 1.0)
        self._best = None  # keep=best_dev: a network of the abandoned start is not kept
        return TrainState(flat, opt_state, 0, 1.0, in_a_row, state.skipped, n)

    def _evaluate(self, state: TrainState) -> float | None:
        """Dev loss of the current network (recorded in metrics.jsonl); None without dev patches."""
        if len(self.dev_patches) == 0:
            return None
        patches = [int(p) for p in self.dev_patches]
        by_call, wall, _, pm = self._gather(patches, state.flat, False, True)
        terms: dict[str, float] = {}
        for t, _ in by_call:
            for k, v in t.items():
                terms[k] = terms.get(k, 0.0) + v
        self.rundir.append({"step": state.step, "split": "dev", **terms, "patches": len(patches),
                            "pixel_months": pm, "time_s": wall})
        log.info("step %d dev loss %.6g (%d patches)", state.step, terms.get("loss", float("nan")), len(patches))
        return terms.get("loss")

    def shutdown(self):
        if self.pool is not None:
            self.pool.shutdown()


def calibrate(config: ExperimentConfig, out_dir: str, *, resume: bool = False, progress: bool = False,
              hooks=None, out_storage_options: dict | None = None, force: bool = False,
              placement_group=None):
    """Train the shared network on every training patch of ``config.data.url``.

    Writes ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` and ``network.npz`` into
    ``out_dir`` (local path or object-storage URL), holding its lease
    (:mod:`differland_dist.storage.lease`; ``force`` takes over a stale one). Returns the final
    :class:`TrainState` and the :class:`Calibration` (metrics, network unravel function).
    """
    cal = Calibration(config, out_dir, resume=resume, progress=progress, hooks=hooks,
                      out_storage_options=out_storage_options, force=force,
                      placement_group=placement_group)
    state = cal.run()
    return state, cal
