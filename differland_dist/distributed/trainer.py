"""The calibration driver: shards patches onto Ray actors, aggregates their gradients in a
fixed order, applies optax updates, evaluates the dev patches, checkpoints, and survives
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
import yaml

from differland_dist import checkpoint
from differland_dist.config import ExperimentConfig, check_against_store
from differland_dist.data import splits
from differland_dist.errors import CheckpointError, ConfigError, DifferlandError
from differland_dist.lease import Lease
from differland_dist.location import Location
from differland_dist.runs import (checkpoint_name, checkpoint_steps, join, read_latest,
                                  remove_stale_temp_files)
from differland_dist.secrets import safe_config_dict

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


def check_ray_address(address: str, timeout_s: float = 10.0) -> str | None:
    """The ``host:port`` a non-local ``ray.address`` points at, checked to accept connections
    within ``timeout_s``; DifferlandError naming the address otherwise (instead of Ray retrying
    for minutes). ``local`` gives None."""
    import socket

    if address == "local":
        return None
    import ray
    from ray._private import services

    if ray.is_initialized():  # this process already joined a cluster: that one is used
        return None

    try:
        resolved = services.canonicalize_bootstrap_address(address.removeprefix("ray://"))
    except (ConnectionError, ValueError) as e:
        raise DifferlandError(f"ray.address={address}: no running Ray cluster found ({e}); start "
                              "one (ray start --head) or use ray.address=local") from None
    if resolved is None:
        raise DifferlandError(f"ray.address={address}: no running Ray cluster found; start one "
                              "(ray start --head) or use ray.address=local")
    host, _, port = resolved.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as e:
        raise DifferlandError(f"ray.address={address}: no Ray cluster answers at {resolved} "
                              f"within {timeout_s:.0f} s ({e}); is it running?") from None
    return resolved


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
    """One calibration run (see :func:`calibrate`)."""

    def __init__(self, config: ExperimentConfig, out_dir: str, *, resume: bool = False,
                 progress: bool = False, hooks: list[Callable[[int, "Calibration"], None]] | None = None,
                 out_storage_options: dict | None = None, force: bool = False,
                 placement_group=None):
        from differland_dist.data.store import open_store

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
        self._metrics_saved = 0   # records of self.metrics already in metrics.jsonl
        self.progress = progress
        self.hooks = hooks or []
        # Validation first: a bad store fails here, before Ray or any long work starts.
        self.store = open_store(config.data.url, dict(config.data.storage_options), validate=True)
        self.fingerprint = self.store.fingerprint()
        if _same_or_inside(self.loc, Location(self.store.url, self.store.storage_options)):
            raise DifferlandError(f"--out {self.out}: this is the store {config.data.url} itself "
                                  "(or inside it); choose a run directory outside the store")
        self.placement_group = placement_group
        self.time_split = "time_test" in self.store.array_names
        if self.time_split:  # sites split by time: every patch trains, its later steps are dev
            self.train_patches = np.asarray(self.store.patch_ids)
            self.dev_patches = np.asarray(self.store.patch_ids)
        else:
            split = splits.from_store(self.store.patch_slices, self.store.split, self.store.attrs,
                                      self.store.url)
            if config.data.split_seed is not None:
                split = splits.redraw(split, config.data.split_seed, config.data.dev_fraction)
            # test patches are never read: not for training, not for selection
            self.train_patches, self.dev_patches = split.train, split.dev
            log.info("%s: %s%s", config.data.url, split.counts(),
                     "" if config.data.split_seed is None else
                     f" (train/dev drawn with data.split_seed={config.data.split_seed})")
        if len(self.train_patches) == 0:
            raise DifferlandError(f"{config.data.url}: no training patches (split == 0)")
        self.T = self.store.n_time
        check_against_store(config, self.T, self.store.steps_per_year)
        # A cluster that is not there fails now, not after minutes of Ray retries.
        check_ray_address(config.ray.address)
        self.resume = resume
        self.metrics: list[dict] = []
        self.restarts = 0
        self._workers: list = []
        self._owned: list[list[int]] = []

    # -- run directory ---------------------------------------------------------------------
    def _ckpt_meta(self, state: TrainState) -> dict:
        return {"kind": "training", "step": state.step, "config": self.saved_config,
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
        # Metrics first: latest.json commits the checkpoint, and its records must be there by then.
        self._write_metrics(commit=True)
        self._check_lease()
        checkpoint.save(join(self.out, "checkpoints", name), arrays, meta, self.out_so)
        self.loc.join("checkpoints", "latest.json").write_json({"step": state.step, "path": name})
        if final:
            checkpoint.save(join(self.out, "network.npz"), arrays, meta, self.out_so)
        self._last_ckpt = (state.step, state.flat.copy(), state.opt_state, state.lr_scale)
        log.info("checkpoint %s", join(self.out, "checkpoints", name))

    def _check_lease(self):
        if self._lease is not None:
            self._lease.check()

    def _write_metrics(self, commit: bool = False):
        """Save the records not yet in ``metrics.jsonl``. Locally they are appended (one
        write, fsynced; a kill mid-write leaves a partial last line, which loading drops).
        Object stores cannot append: there the whole file is rewritten in one atomic upload,
        only when ``commit`` (at checkpoints and the end)."""
        new = self.metrics[self._metrics_saved:]
        if not new:
            return
        self._check_lease()
        target = self.loc.join("metrics.jsonl")
        if target.local:
            os.makedirs(os.path.dirname(target.path) or ".", exist_ok=True)
            with open(target.path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(m) + "\n" for m in new))
                f.flush()
                os.fsync(f.fileno())
        elif commit:
            target.write_atomic("".join(json.dumps(m) + "\n" for m in self.metrics).encode())
        else:
            return
        self._metrics_saved = len(self.metrics)

    def _reset_metrics(self, upto_step: int | None):
        """Start ``metrics.jsonl`` afresh (None) or keep the records up to ``upto_step`` (a
        resume: later records, and a partial last line, belong to steps that will be redone);
        rewritten atomically, then appended to."""
        self.metrics = []
        target = self.loc.join("metrics.jsonl")
        if upto_step is not None:
            try:
                lines = target.read_bytes().decode("utf-8", "replace").splitlines()
            except FileNotFoundError:
                lines = []
            for i, x in enumerate(lines):
                if not x.strip():
                    continue
                try:
                    m = json.loads(x)
                except json.JSONDecodeError:
                    log.warning("%s: dropping unreadable line %d (a write cut short by a kill)",
                                target.url, i + 1)
                    continue
                if isinstance(m, dict) and isinstance(m.get("step"), int) and m["step"] <= upto_step:
                    self.metrics.append(m)
        target.write_atomic("".join(json.dumps(m) + "\n" for m in self.metrics).encode())
        self._metrics_saved = len(self.metrics)

    def _load_metrics(self, upto_step: int):
        """The records up to ``upto_step`` (read only: for a finished run)."""
        try:
            lines = self.loc.join("metrics.jsonl").read_bytes().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return
        recs = []
        for x in lines:
            try:
                recs.append(json.loads(x))
            except json.JSONDecodeError:
                continue
        self.metrics = [m for m in recs if isinstance(m, dict) and m.get("step", upto_step + 1) <= upto_step]
        self._metrics_saved = len(self.metrics)

    def _resume_checkpoint(self) -> tuple[str, tuple[dict, dict]] | None:
        """The newest readable checkpoint to resume from: latest.json's, else (if that one or
        latest.json is corrupt) the newest older one that loads, with a warning. None if the
        run directory has no checkpoints."""
        steps = checkpoint_steps(self.out, self.out_so)
        try:
            latest = read_latest(self.out, self.out_so)
        except CheckpointError as e:
            log.warning("%s; looking for the newest readable checkpoint instead", e)
            latest = None
        else:
            if latest is not None:
                steps = [latest["step"]] + [s for s in steps if s < latest["step"]]
        if latest is None and not steps:
            return None
        problems = []
        for step in steps:
            url = join(self.out, "checkpoints", checkpoint_name(step))
            try:
                arrays, meta = checkpoint.load(url, self.out_so)
                missing = [k for k in ("std_mean", "std_std") if k not in arrays]
                if missing or not isinstance(meta.get("step"), int) or "config" not in meta:
                    raise CheckpointError(f"{url}: incomplete training checkpoint (missing "
                                          f"{missing or 'step/config'})")
            except CheckpointError as e:
                log.warning("cannot resume from %s (%s); trying the previous checkpoint", url, e)
                problems.append(str(e))
                continue
            if problems:
                log.warning("resuming from %s, the newest readable checkpoint", url)
            return url, (arrays, meta)
        raise CheckpointError(f"{self.out}: no readable checkpoint to resume from: "
                              + "; ".join(problems))

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
                try:
                    ray.init(address=rc.address, runtime_env=runtime_env)
                except (ConnectionError, TimeoutError) as e:
                    first = (str(e).splitlines() or [""])[0]
                    raise DifferlandError(f"ray.address={rc.address}: cannot join the Ray cluster "
                                          f"({type(e).__name__}: {first})") from None
        self._runtime_env = runtime_env

    def _new_worker(self, w: int):
        from differland_dist.distributed.worker import make_actor_class

        rc = self.config.ray
        opts: dict[str, Any] = {"num_cpus": rc.cpus_per_worker, "runtime_env": self._runtime_env}
        if rc.gpus_per_worker:
            opts["num_gpus"] = rc.gpus_per_worker
        if rc.tpus_per_worker:
            opts["resources"] = {"TPU": rc.tpus_per_worker}
        if self.placement_group is not None:  # an experiment member: its reserved bundles
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.placement_group, placement_group_bundle_index=w % self.placement_group.bundle_count)
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
        """The whole run, holding the run directory's lease (a second writer is refused)."""
        with Lease(self.loc, owner="calibrate", force=self.force) as lease:
            self._lease = lease
            try:
                return self._run()
            finally:
                self._lease = None

    def _run(self) -> TrainState:
        import jax
        import optax
        from jax.flatten_util import ravel_pytree

        from differland_dist.data.batch import predictor_names
        from differland_dist.distributed.optim import make_optimizer, state_from_arrays
        from differland_dist.network.mlp import init_network

        cfg, tc = self.config, self.config.training
        if not self.resume:
            try:
                has = read_latest(self.out, self.out_so) is not None
            except CheckpointError:
                has = True
            if has or checkpoint_steps(self.out, self.out_so):
                raise DifferlandError(f"{self.out} already holds checkpoints: pass --resume to "
                                      "continue it, or choose another --out")
        # We hold the lease: temporary files here are a killed writer's, never a live one's.
        remove_stale_temp_files(self.out, self.out_so)
        ckpt = None
        found = self._resume_checkpoint() if self.resume else None
        if found is not None:
            resume_from, ckpt = found
            self._check_resumable(ckpt[1], resume_from)
        self.loc.join("config.yaml").write_atomic(
            yaml.safe_dump(self.saved_config, sort_keys=False).encode())

        names = predictor_names(cfg.data.predictors)
        self.std_names = ["hemisphere"] + names
        net0 = init_network(jax.random.PRNGKey(tc.seed), len(names), cfg.network)
        flat0, self._unravel = ravel_pytree(net0)
        tx = make_optimizer(cfg.optimizer, tc.steps)

        # Shard the patches: patch i (sorted) goes to worker i mod W.
        W = cfg.ray.workers
        needed = np.union1d(self.train_patches, self.dev_patches)
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
            self._reset_metrics(state.step)
            self._last_ckpt = (state.step, state.flat.copy(), state.opt_state, state.lr_scale)
            log.info("resuming %s at step %d", self.out, state.step)
        else:
            self._reset_metrics(None)
            self.std_mean, self.std_std = self._standardisation()
            state = TrainState(np.asarray(flat0), tx.init(net0), 0)
            self._last_ckpt = (0, state.flat.copy(), state.opt_state, 1.0)
        log.info("%d workers ready in %.1fs: %d train / %d dev patches, %d steps of %d patches",
                 W, time.perf_counter() - t0, len(self.train_patches), len(self.dev_patches),
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
                else:
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
        saved = json.loads(json.dumps(meta["config"]))
        mine = json.loads(json.dumps(self.saved_config))
        # Only the number of steps, cadences, the cluster and how the data is reached
        # (storage options: credentials, endpoints) may change on resume.
        saved.get("data", {}).pop("storage_options", None), mine["data"].pop("storage_options", None)
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
        order = tc.seed if tc.order_seed is None else tc.order_seed
        patches = step_patches(self.train_patches, state.step, tc.patches_per_step, order)
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

    def _nonfinite(self, state: TrainState, what: str) -> TrainState:
        """``what``: which values were not finite (:func:`describe_nonfinite`)."""
        tc = self.config.training
        n = state.nonfinite_in_a_row + 1
        if n > tc.max_nonfinite:
            raise TrainingDiverged(f"{n} consecutive steps with a non-finite loss or gradient "
                                   f"(training.max_nonfinite = {tc.max_nonfinite}); last step: {what}")
        action = tc.on_nonfinite
        log.warning("step %d: %s: not applied; %s (%d in a row)", state.step + 1, what, action, n)
        if action == "skip":
            return dataclasses.replace(state, step=state.step + 1, nonfinite_in_a_row=n,
                                       skipped=state.skipped + [state.step + 1])
        if action == "reduce_lr":
            return dataclasses.replace(state, lr_scale=state.lr_scale * tc.lr_reduction, nonfinite_in_a_row=n)
        step, flat, opt_state, scale = self._last_ckpt
        return TrainState(flat.copy(), opt_state, step, min(state.lr_scale, scale) * tc.lr_reduction, n,
                          state.skipped)

    def _evaluate(self, state: TrainState):
        if len(self.dev_patches) == 0:
            return
        patches = [int(p) for p in self.dev_patches]
        by_patch, wall, _, pm = self._gather(patches, state.flat, False, True)
        terms: dict[str, float] = {}
        for p in patches:
            for k, v in by_patch[p][0].items():
                terms[k] = terms.get(k, 0.0) + v
        self.metrics.append({"step": state.step, "split": "dev", **terms, "patches": len(patches),
                             "pixel_months": pm, "time_s": wall})
        log.info("step %d dev loss %.6g (%d patches)", state.step, terms.get("loss", float("nan")), len(patches))

    def shutdown(self):
        import ray

        for a in self._workers:
            try:
                ray.kill(a)
            except Exception:
                pass
        self._workers = []


def calibrate(config: ExperimentConfig, out_dir: str, *, resume: bool = False, progress: bool = False,
              hooks=None, out_storage_options: dict | None = None, force: bool = False,
              placement_group=None):
    """Train the shared network on every training patch of ``config.data.url``.

    Writes ``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` and ``network.npz`` into
    ``out_dir`` (local path or object-storage URL), holding its lease
    (:mod:`differland_dist.lease`; ``force`` takes over a stale one). Returns the final
    :class:`TrainState` and the :class:`Calibration` (metrics, network unravel function).
    """
    cal = Calibration(config, out_dir, resume=resume, progress=progress, hooks=hooks,
                      out_storage_options=out_storage_options, force=force,
                      placement_group=placement_group)
    state = cal.run()
    return state, cal
