"""The calibration driver: shards patches onto Ray actors, aggregates their gradients in a
fixed order, applies optax updates, evaluates held-out patches, checkpoints, and survives
lost workers.

Determinism: the patches of step s are a slice of a permutation drawn from
``numpy.random.default_rng([seed, epoch])``; each patch's gradient is computed at a fixed
shape (see :mod:`differland_dist.distributed.shard`) and the driver sums the per-patch
gradients in the step's patch order. The same config and seed therefore give the same
network with 1, 2 or 3 workers, after a resume, and after a worker was replaced.
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

import numpy as np

from differland_dist import checkpoint
from differland_dist.config import ExperimentConfig
from differland_dist.errors import CheckpointError, ConfigError, DifferlandError
from differland_dist.runs import checkpoint_name, join, latest_checkpoint

log = logging.getLogger(__name__)


class TrainingDiverged(DifferlandError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class WorkersLost(DifferlandError):
    """Workers kept dying beyond ``ray.max_worker_restarts``."""


@dataclass
class TrainState:
    flat: np.ndarray                 # network parameters, flattened (float32)
    opt_state: Any                   # optax state (pytree of jax arrays)
    step: int                        # steps completed
    lr_scale: float = 1.0            # lowered by on_nonfinite = reduce_lr / rollback
    nonfinite_in_a_row: int = 0
    skipped: list[int] = field(default_factory=list)


def step_patches(train_patches: np.ndarray, step: int, per_step: int, seed: int) -> list[int]:
    """The patches of ``step`` (0-based): epochs are seeded permutations of the train patches."""
    n = len(train_patches)
    per_step = min(per_step, n)
    steps_per_epoch = max(1, n // per_step)
    epoch, k = divmod(step, steps_per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [int(train_patches[i]) for i in perm[k * per_step:(k + 1) * per_step]]


def _fs_write_text(url: str, text: str, storage_options: dict | None):
    checkpoint.write_bytes_atomic(url, text.encode(), storage_options)


class Calibration:
    """One calibration run (see :func:`calibrate`)."""

    def __init__(self, config: ExperimentConfig, out_dir: str, *, resume: bool = False,
                 progress: bool = False, hooks: list[Callable[[int, "Calibration"], None]] | None = None,
                 out_storage_options: dict | None = None):
        from differland_dist.data.store import open_store

        if not config.data.url:
            raise ConfigError("data.url is empty: set it in the config or with --set data.url=URL")
        self.config = config
        self.out = out_dir.rstrip("/")
        self.out_so = out_storage_options or {}
        self.progress = progress
        self.hooks = hooks or []
        # Validation first: a bad store fails here, before Ray or any long work starts.
        self.store = open_store(config.data.url, dict(config.data.storage_options), validate=True)
        self.fingerprint = self.store.fingerprint()
        self.time_split = "time_test" in self.store.array_names
        if self.time_split:
            self.train_patches = np.asarray(self.store.patch_ids)
            self.test_patches = np.asarray(self.store.patch_ids)
        else:
            self.train_patches = np.asarray(self.store.train_patches)
            self.test_patches = np.asarray(self.store.test_patches)
        if len(self.train_patches) == 0:
            raise DifferlandError(f"{config.data.url}: no training patches (split == 0)")
        self.T = self.store.n_time
        self.resume = resume
        self.metrics: list[dict] = []
        self.restarts = 0
        self._workers: list = []
        self._owned: list[list[int]] = []

    # -- run directory ---------------------------------------------------------------------
    def _ckpt_meta(self, state: TrainState) -> dict:
        return {"kind": "training", "step": state.step, "config": self.config.to_dict(),
                "data_fingerprint": self.fingerprint, "lr_scale": state.lr_scale,
                "nonfinite_in_a_row": state.nonfinite_in_a_row, "skipped": state.skipped,
                "rng": {"kind": "numpy.default_rng([seed, epoch])", "seed": self.config.training.seed,
                        "next_step": state.step},
                "network": dataclasses.asdict(self.config.network),
                "predictor_names": list(self.std_names), "time_split": self.time_split}

    def _save_checkpoint(self, state: TrainState, final: bool = False):
        from differland_dist.distributed.optim import state_to_arrays
        from differland_dist.network.mlp import network_to_arrays

        net = self._unravel(state.flat)
        arrays = network_to_arrays(net)
        arrays["std_mean"], arrays["std_std"] = self.std_mean, self.std_std
        arrays.update(state_to_arrays(state.opt_state, "opt/"))
        meta = self._ckpt_meta(state)
        name = checkpoint_name(state.step)
        checkpoint.save(join(self.out, "checkpoints", name), arrays, meta, self.out_so)
        _fs_write_text(join(self.out, "checkpoints", "latest.json"),
                       json.dumps({"step": state.step, "path": name}), self.out_so)
        self._write_metrics()
        if final:
            checkpoint.save(join(self.out, "network.npz"), arrays, meta, self.out_so)
        self._last_ckpt = (state.step, state.flat.copy(), state.opt_state, state.lr_scale)
        log.info("checkpoint %s", join(self.out, "checkpoints", name))

    def _write_metrics(self):
        text = "".join(json.dumps(m) + "\n" for m in self.metrics)
        _fs_write_text(join(self.out, "metrics.jsonl"), text, self.out_so)

    def _load_metrics(self, upto_step: int):
        fs, path = checkpoint._fs(join(self.out, "metrics.jsonl"), self.out_so)
        if fs.exists(path):
            lines = fs.cat_file(path).decode().splitlines()
            self.metrics = [m for m in (json.loads(x) for x in lines if x.strip()) if m["step"] <= upto_step]

    # -- Ray ------------------------------------------------------------------------------
    def _start_ray(self):
        import ray

        from differland_dist.distributed.worker import worker_env

        rc = self.config.ray
        env = worker_env(rc)
        runtime_env = {k: v for k, v in rc.runtime_env.items() if k != "env_vars"}
        runtime_env["env_vars"] = env
        if not ray.is_initialized():
            if rc.address == "local":
                need = rc.workers * rc.cpus_per_worker
                ray.init(num_cpus=max(int(math.ceil(need)), os.cpu_count() or 1),
                         include_dashboard=False, runtime_env=runtime_env,
                         log_to_driver=log.isEnabledFor(logging.DEBUG))
            else:
                ray.init(address=rc.address, runtime_env=runtime_env)
        self._runtime_env = runtime_env

    def _new_worker(self, w: int):
        from differland_dist.distributed.worker import make_actor_class

        rc = self.config.ray
        opts: dict[str, Any] = {"num_cpus": rc.cpus_per_worker, "runtime_env": self._runtime_env}
        if rc.gpus_per_worker:
            opts["num_gpus"] = rc.gpus_per_worker
        if rc.tpus_per_worker:
            opts["resources"] = {"TPU": rc.tpus_per_worker}
        cls = make_actor_class()
        return cls.options(**opts).remote(self.config.to_dict(), self._owned[w],
                                          self.config.training.patches_per_call)

    def _call(self, method: str, jobs: dict[int, tuple]):
        """Run ``method(*args)`` on workers {w: args}; replace dead workers and retry."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        pending = dict(jobs)
        results: dict[int, Any] = {}
        while pending:
            refs = {w: getattr(self._workers[w], method).remote(*args) for w, args in pending.items()}
            for w, ref in refs.items():
                try:
                    results[w] = ray.get(ref)
                    pending.pop(w)
                except (RayActorError, ActorDiedError, ActorUnavailableError) as e:
                    self.restarts += 1
                    if self.restarts > self.config.ray.max_worker_restarts * len(self._workers):
                        raise WorkersLost(f"workers died {self.restarts} times (limit "
                                          f"{self.config.ray.max_worker_restarts} per worker): {e}") from e
                    log.warning("worker %d died (%s); starting a replacement that re-reads its %d patches",
                                w, type(e).__name__, len(self._owned[w]))
                    try:
                        ray.kill(self._workers[w])
                    except Exception:
                        pass
                    self._workers[w] = self._new_worker(w)
        return results

    def worker_pids(self) -> list[int]:
        return [r["pid"] for r in self._call("info", {w: () for w in range(len(self._workers))}).values()]

    # -- the run --------------------------------------------------------------------------
    def run(self) -> TrainState:
        import jax
        import optax
        from jax.flatten_util import ravel_pytree

        from differland_dist.data.batch import predictor_names
        from differland_dist.distributed.optim import make_optimizer, state_from_arrays
        from differland_dist.network.mlp import init_network

        cfg, tc = self.config, self.config.training
        resume_from = latest_checkpoint(self.out, self.out_so) if self.resume else None
        if not self.resume and latest_checkpoint(self.out, self.out_so) is not None:
            raise DifferlandError(f"{self.out} already holds checkpoints: pass --resume to continue "
                                  "it, or choose another --out")
        ckpt = None
        if resume_from:
            ckpt = checkpoint.load(resume_from, self.out_so)
            self._check_resumable(ckpt[1], resume_from)
        _fs_write_text(join(self.out, "config.yaml"), cfg.to_yaml(), self.out_so)

        names = predictor_names(cfg.data.predictors)
        self.std_names = ["hemisphere"] + names
        net0 = init_network(jax.random.PRNGKey(tc.seed), len(names), cfg.network)
        flat0, self._unravel = ravel_pytree(net0)
        tx = make_optimizer(cfg.optimizer, tc.steps)

        # Shard the patches: patch i (sorted) goes to worker i mod W.
        W = cfg.ray.workers
        needed = np.union1d(self.train_patches, self.test_patches)
        self._owned = [[int(p) for p in needed[w::W]] for w in range(W)]
        self.owner = {p: w for w in range(W) for p in self._owned[w]}
        if ckpt is not None and int(ckpt[1]["step"]) >= tc.steps and \
                checkpoint.exists(join(self.out, "network.npz"), self.out_so):
            # A finished run: a rerun is a no-op (no cluster, no recomputation).
            from differland_dist.network.mlp import network_from_arrays

            arrays, meta = ckpt
            self.std_mean, self.std_std = arrays["std_mean"], arrays["std_std"]
            self._load_metrics(int(meta["step"]))
            flat = np.asarray(ravel_pytree(network_from_arrays(arrays))[0])
            log.info("%s is complete at step %d: nothing to do", self.out, meta["step"])
            return TrainState(flat, state_from_arrays(tx.init(net0), arrays, "opt/"), int(meta["step"]),
                              float(meta.get("lr_scale", 1.0)))
        self._start_ray()
        t0 = time.perf_counter()
        self._workers = [self._new_worker(w) for w in range(W)]

        if ckpt is not None:
            arrays, meta = ckpt
            self.std_mean, self.std_std = arrays["std_mean"], arrays["std_std"]
            from differland_dist.network.mlp import network_from_arrays

            flat = np.asarray(ravel_pytree(network_from_arrays(arrays))[0])
            opt_state = state_from_arrays(tx.init(net0), arrays, "opt/")
            state = TrainState(flat, opt_state, int(meta["step"]), float(meta.get("lr_scale", 1.0)),
                               int(meta.get("nonfinite_in_a_row", 0)), list(meta.get("skipped", [])))
            self._load_metrics(state.step)
            self._last_ckpt = (state.step, state.flat.copy(), state.opt_state, state.lr_scale)
            log.info("resuming %s at step %d", self.out, state.step)
        else:
            self.std_mean, self.std_std = self._standardisation()
            state = TrainState(np.asarray(flat0), tx.init(net0), 0)
            self._last_ckpt = (0, state.flat.copy(), state.opt_state, 1.0)
        log.info("%d workers ready in %.1fs: %d train / %d held-out patches, %d steps of %d patches",
                 W, time.perf_counter() - t0, len(self.train_patches), len(self.test_patches),
                 tc.steps, min(tc.patches_per_step, len(self.train_patches)))

        @jax.jit
        def apply(flat, grad, opt_state, lr_scale):
            net = self._unravel(flat)
            g = self._unravel(grad)
            updates, opt_state = tx.update(g, opt_state, net)
            updates = jax.tree.map(lambda u: u * lr_scale, updates)
            return ravel_pytree(optax.apply_updates(net, updates))[0], opt_state

        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=tc.steps, initial=state.step, desc="calibrate", unit="step", dynamic_ncols=True)
        try:
            while state.step < tc.steps:
                state = self._train_step(state, apply, bar)
                for h in self.hooks:
                    h(state.step, self)
                done = state.step >= tc.steps
                if (tc.eval_every and state.step % tc.eval_every == 0) or done:
                    self._evaluate(state)
                if (tc.checkpoint_every and state.step % tc.checkpoint_every == 0) or done:
                    self._save_checkpoint(state, final=done)
                elif not self.out.startswith(("gs://", "s3://")):
                    self._write_metrics()
        finally:
            if bar is not None:
                bar.close()
            self.shutdown()
        return state

    def _check_resumable(self, meta: dict, src: str):
        if meta.get("data_fingerprint") != self.fingerprint:
            raise CheckpointError(f"{src}: made on different data (fingerprint "
                                  f"{meta.get('data_fingerprint')} != {self.fingerprint})")
        saved = dict(meta["config"])
        mine = self.config.to_dict()
        # Only the number of steps, cadences and the cluster may change on resume.
        for sec, keys in (("training", ("steps", "eval_every", "checkpoint_every")), ("ray", None)):
            if keys is None:
                saved.pop(sec, None), mine.pop(sec, None)
            else:
                for k in keys:
                    saved[sec].pop(k, None), mine[sec].pop(k, None)
        if json.dumps(saved, sort_keys=True) != json.dumps(mine, sort_keys=True):
            diff = [k for k in mine if json.dumps(mine[k], sort_keys=True) != json.dumps(saved.get(k), sort_keys=True)]
            raise CheckpointError(f"{src}: config differs from the checkpoint's in {diff}; "
                                  "only training.steps/eval_every/checkpoint_every and ray may change on resume")

    def _standardisation(self):
        """Training pixels' mean and std of [hemisphere, predictors...], from per-patch sums
        added in patch order (independent of the number of workers)."""
        jobs: dict[int, tuple] = {}
        train = set(int(p) for p in self.train_patches)
        for w in range(len(self._workers)):
            jobs[w] = ([p for p in self._owned[w] if p in train],)
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

    def _route(self, patches: list[int]) -> dict[int, list[int]]:
        jobs: dict[int, list[int]] = {}
        for p in patches:
            jobs.setdefault(self.owner[p], []).append(p)
        return jobs

    def _gather(self, patches, flat, with_grad, test):
        import ray

        ref = ray.put(flat)
        jobs = {w: (ref, ids, self.std_mean.astype(np.float32), self.std_std.astype(np.float32), with_grad, test)
                for w, ids in self._route(patches).items()}
        t0 = time.perf_counter()
        res = self._call("compute", jobs)
        wall = time.perf_counter() - t0
        by_patch = {}
        compute_s = 0.0
        pm = 0
        for w, (items, secs, pms) in res.items():
            compute_s = max(compute_s, secs)
            pm += pms
            for p, terms, grad in items:
                by_patch[p] = (terms, grad)
        return by_patch, wall, compute_s, pm

    def _train_step(self, state: TrainState, apply, bar) -> TrainState:
        import jax.numpy as jnp

        tc = self.config.training
        t_step = time.perf_counter()
        patches = step_patches(self.train_patches, state.step, tc.patches_per_step, tc.seed)
        by_patch, wall, compute_s, pm = self._gather(patches, state.flat, True, False)
        t1 = time.perf_counter()
        # Fixed-order sums: the step's patch order, whatever worker computed each patch.
        grad = np.zeros_like(by_patch[patches[0]][1], dtype=np.float32)
        terms: dict[str, float] = {}
        for p in patches:
            t, g = by_patch[p]
            grad = grad + g
            for k, v in t.items():
                terms[k] = terms.get(k, 0.0) + v
        loss = terms.get("loss", float("nan"))
        finite = math.isfinite(loss) and bool(np.all(np.isfinite(grad)))
        rec = {"step": state.step + 1, "split": "train", **terms, "patches": len(patches),
               "pixel_months": pm, "lr_scale": state.lr_scale, "applied": finite,
               "workers": len(self._workers), "time_compute_s": compute_s,
               "time_comm_s": max(wall - compute_s, 0.0)}
        if finite:
            flat, opt_state = apply(jnp.asarray(state.flat), jnp.asarray(grad), state.opt_state,
                                    jnp.asarray(state.lr_scale, jnp.float32))
            state = dataclasses.replace(state, flat=np.asarray(flat), opt_state=opt_state,
                                        step=state.step + 1, nonfinite_in_a_row=0)
        else:
            state = self._nonfinite(state, loss)
        rec["time_driver_s"] = time.perf_counter() - t1
        rec["time_step_s"] = time.perf_counter() - t_step
        rec["pixel_months_per_s"] = pm / max(rec["time_step_s"], 1e-9)
        self.metrics.append(rec)
        if bar is not None:
            bar.n = state.step
            bar.set_postfix(loss=f"{loss:.4g}", pm_s=f"{rec['pixel_months_per_s']:.3g}", refresh=False)
            bar.refresh()
        every = max(1, tc.steps // 20)
        log.log(logging.INFO if rec["step"] % every == 0 or rec["step"] == 1 or not finite else logging.DEBUG,
                "step %d/%d loss %.6g (%d patches, %.3g pixel-months/s)%s", rec["step"], tc.steps,
                 loss, len(patches), rec["pixel_months_per_s"], "" if finite else " NOT APPLIED")
        return state

    def _nonfinite(self, state: TrainState, loss: float) -> TrainState:
        tc = self.config.training
        n = state.nonfinite_in_a_row + 1
        if n > tc.max_nonfinite:
            raise TrainingDiverged(f"{n} consecutive steps with a non-finite loss or gradient "
                                   f"(training.max_nonfinite = {tc.max_nonfinite}); last loss {loss}")
        action = tc.on_nonfinite
        log.warning("step %d: non-finite loss/gradient (loss %s): not applied; %s (%d in a row)",
                    state.step + 1, loss, action, n)
        if action == "skip":
            return dataclasses.replace(state, step=state.step + 1, nonfinite_in_a_row=n,
                                       skipped=state.skipped + [state.step + 1])
        if action == "reduce_lr":
            return dataclasses.replace(state, lr_scale=state.lr_scale * tc.lr_reduction, nonfinite_in_a_row=n)
        step, flat, opt_state, scale = self._last_ckpt
        return TrainState(flat.copy(), opt_state, step, min(state.lr_scale, scale) * tc.lr_reduction, n,
                          state.skipped)

    def _evaluate(self, state: TrainState):
        if len(self.test_patches) == 0:
            return
        patches = [int(p) for p in self.test_patches]
        by_patch, wall, _, pm = self._gather(patches, state.flat, False, True)
        terms: dict[str, float] = {}
        for p in patches:
            for k, v in by_patch[p][0].items():
                terms[k] = terms.get(k, 0.0) + v
        self.metrics.append({"step": state.step, "split": "test", **terms, "patches": len(patches),
                             "pixel_months": pm, "time_s": wall})
        log.info("step %d held-out loss %.6g (%d patches)", state.step, terms.get("loss", float("nan")), len(patches))

    def shutdown(self):
        import ray

        for a in self._workers:
            try:
                ray.kill(a)
            except Exception:
                pass
        self._workers = []


def calibrate(config: ExperimentConfig, out_dir: str, *, resume: bool = False, progress: bool = False,
              hooks=None, out_storage_options: dict | None = None):
    """Train the shared network on every training patch of ``config.data.url``.

    Writes ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` and ``network.npz`` into
    ``out_dir`` (local path or object-storage URL). Returns the final :class:`TrainState`
    and the :class:`Calibration` (metrics, network unravel function).
    """
    cal = Calibration(config, out_dir, resume=resume, progress=progress, hooks=hooks,
                      out_storage_options=out_storage_options)
    state = cal.run()
    return state, cal
