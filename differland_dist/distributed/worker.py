"""The Ray actor that holds a :class:`~differland_dist.distributed.shard.Shard`.

JAX is imported inside the actor, after Ray has applied the runtime environment, so
``JAX_PLATFORMS`` and the GPU memory settings take effect in the worker process.

Log output: library code only logs. The process that configures output (the CLI) names,
in :data:`LOG_SETUP_ENV`, the function that configures a worker process's output;
:func:`worker_env` passes it to the workers through the runtime environment and the actor
calls it first (:func:`run_log_setup`).
"""

from __future__ import annotations

import importlib
import os
import socket
import time
from typing import Any, Sequence

from differland_dist.distributed.shard import Shard
from differland_dist.common.process_env import jax_process_env


#: The environment variable naming the function (``module:function``) a worker process calls
#: first to configure its log output; unset, the worker leaves its logging as Ray made it.
LOG_SETUP_ENV = "DIFFERLAND_WORKER_LOG_SETUP"


def run_log_setup() -> None:
    """Call the function :data:`LOG_SETUP_ENV` names, if any (in a worker process)."""
    spec = os.environ.get(LOG_SETUP_ENV, "")
    if spec:
        module, _, name = spec.partition(":")
        getattr(importlib.import_module(module), name)()


def worker_env(ray_cfg) -> dict[str, str]:
    """Environment variables for worker processes (passed through the runtime env)."""
    if ray_cfg.jax_platforms:
        platforms = ray_cfg.jax_platforms
    elif ray_cfg.gpus_per_worker > 0:
        platforms = "cuda"
    elif ray_cfg.tpus_per_worker > 0:
        platforms = "tpu"
    else:
        platforms = "cpu"
    threads = ray_cfg.jax_threads_per_worker or (int(ray_cfg.cpus_per_worker) if platforms == "cpu" else 0)
    env = jax_process_env(platforms, threads)
    if os.environ.get(LOG_SETUP_ENV):  # how this driver's caller wants worker output configured
        env[LOG_SETUP_ENV] = os.environ[LOG_SETUP_ENV]
    user = dict(ray_cfg.runtime_env.get("env_vars", {}))
    env.update({k: str(v) for k, v in user.items()})
    return env


def resident_memory() -> dict[str, int]:
    """This process's resident memory in bytes now (``rss_bytes``) and at its peak
    (``peak_rss_bytes``), from /proc (empty where there is none)."""
    keys = {"VmRSS": "rss_bytes", "VmHWM": "peak_rss_bytes"}
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[keys[k]] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def make_actor_class():
    # imported here: Ray loads only when workers start (the trainer imports worker_env from here)
    import ray

    @ray.remote(max_restarts=0)
    class ShardWorker:
        """Streams patches; computes per-patch loss terms and gradients for the driver."""

        def __init__(self, config: dict, patch_ids: Sequence[int], shape: Sequence[int]):
            """``patch_ids``: patches to read at once (others are read when first needed);
            ``shape``: the compiled call's :class:`~differland_dist.distributed.shard.CallShape`."""
            run_log_setup()
            # imported here: Ray actors import JAX after the runtime environment set JAX_PLATFORMS /
            # XLA flags (these modules import JAX)
            import jax
            from jax.flatten_util import ravel_pytree

            from differland_dist.config import from_dict
            from differland_dist.data.batch import predictor_names
            from differland_dist.network.mlp import init_network

            cfg = from_dict(config)
            self.shard = Shard(cfg, patch_ids, tuple(shape))
            n_pred = len(predictor_names(cfg.data.predictors))
            template = init_network(jax.random.PRNGKey(0), n_pred, cfg.network)
            flat, self._unravel = ravel_pytree(template)
            self._cfg, self._size, self._updater = cfg, flat.size, None

        def info(self) -> dict[str, Any]:
            # imported here: Ray actors import JAX after the runtime environment set JAX_PLATFORMS
            import jax
            import ray

            return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                    "host": socket.gethostname(), "cached_patches": len(self.shard.cache),
                    "cache": dict(self.shard.cache.stats), "call_shape": self.shard.shape._asdict(),
                    "devices": [str(d) for d in jax.devices()], "read_s": self.shard.read_s,
                    "jax_platforms": os.environ.get("JAX_PLATFORMS", ""), **resident_memory()}

        def predictor_sums(self, patch_ids):
            return self.shard.predictor_sums(patch_ids)

        def update(self, flat_params, opt_leaves, lr_scale, calls, last, mean, std, prefetch=()):
            """Several optimizer updates in one program (training.updates_per_call; see
            :mod:`~differland_dist.distributed.multistep`): a :class:`multistep.Result` as a tuple."""
            if self._updater is None:
                import jax

                from differland_dist.distributed.multistep import Updater
                from differland_dist.distributed.optim import make_optimizer

                tx = make_optimizer(self._cfg.optimizer, self._cfg.training.steps)
                self._updater = Updater(self.shard, tx, self._unravel,
                                        tx.init(self._unravel(jax.numpy.zeros(self._size, jax.numpy.float32))))
            if len(prefetch):
                self.shard.prefetch(prefetch)
            return tuple(self._updater.run(flat_params, opt_leaves, lr_scale, calls, last, mean, std))

        def compute(self, flat_params, calls, mean, std, with_grad=True, test=False, prefetch=()):
            """Per-call results of ``calls`` (lists of patch ids), (seconds, pixel-months);
            ``prefetch``: the patches of this worker's next calls, read in the background
            meanwhile."""
            t0 = time.perf_counter()
            net = self._unravel(flat_params)
            if len(prefetch):
                self.shard.prefetch(prefetch)
            res = self.shard.compute(net, calls, mean, std, with_grad=with_grad, test=test)
            return res, time.perf_counter() - t0, self.shard.pixel_months([p for c in calls for p in c])

    return ShardWorker
