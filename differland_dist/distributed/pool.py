"""The Ray side of a calibration: joining the cluster, the worker actors, and what happens
when one dies.

:func:`connect` joins (or starts) the cluster named by ``ray.address``. A
:class:`WorkerPool` starts the actors, runs a method on several of them, and replaces a
worker that died according to one :class:`FailurePolicy`, which returns a
:class:`Decision` (replace it, or give up). A replacement starts empty and streams only the
patches it is asked for next.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
import socket
from typing import Any

from differland_dist.distributed.worker import make_actor_class, worker_env
from differland_dist.errors import DifferlandError, WorkersLost
from differland_dist.storage.location import absolute_url

log = logging.getLogger(__name__)


#: The Ray Client server's port when a ``ray://`` address names none (``ray start``'s default).
RAY_CLIENT_PORT = 10001


def client_address(address: str) -> str:
    """``ray://host[:port]`` with the port made explicit (gRPC alone would take 443)."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or (rest.startswith("[") and not host.endswith("]")):
        rest = f"{rest}:{RAY_CLIENT_PORT}"
    return "ray://" + rest


def check_ray_address(address: str, timeout_s: float = 10.0) -> str | None:
    """The ``host:port`` a non-local ``ray.address`` points at, checked to accept connections
    within ``timeout_s``; DifferlandError naming the address otherwise (instead of Ray retrying
    for minutes). ``auto`` is resolved as Ray does (``RAY_ADDRESS``, else the address file
    ``ray start`` wrote under ``$RAY_TMPDIR/ray``, else a Ray process found on this machine);
    ``ray://host[:port]`` is checked at that host and port (10001 when none is given).
    ``local`` gives None (unless ``RAY_ADDRESS`` is set: that one is checked)."""
    address = effective_address(address)
    if address == "local":
        return None
    # imported here: Ray loads only once a cluster is joined (the trainer imports this module;
    # a bad config fails before Ray loads)
    import ray
    from ray._private import services

    if ray.is_initialized():  # this process already joined a cluster: that one is used
        return None

    if address.startswith("ray://"):  # Ray Client: the client server's own host and port
        resolved = client_address(address).removeprefix("ray://")
    else:
        try:
            resolved = services.canonicalize_bootstrap_address(address)
        except (ConnectionError, ValueError) as e:
            raise DifferlandError(f"ray.address={address}: no running Ray cluster found ({e}); "
                                  "start one (ray start --head) or use ray.address=local") from None
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


def effective_address(address: str) -> str:
    """The cluster ``ray.address`` means here: ``local`` defers to ``RAY_ADDRESS`` when it is
    set (``ray job submit`` sets it for the job's driver), as Ray's own default does."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    return env if address == "local" and env else address


def connect(ray_cfg, runtime_env: dict) -> bool:
    """Join the cluster of ``ray_cfg.address`` (``local``: start one in this process, sized
    for the workers, even if another cluster runs on this machine; ``auto``: the one Ray
    finds; ``host:port``: its GCS; ``ray://host[:port]``: through Ray Client); True if this
    call connected. Nothing happens if this process is already connected.

    A cluster with token authentication (Ray's default once ``~/.ray/auth_token`` exists) is
    joined at an explicit address only with ``RAY_AUTH_MODE=token`` set here, as Ray wants;
    a failure to join says so."""
    # imported here: Ray loads only once a cluster is joined (the trainer imports this module;
    # a bad config fails before Ray loads)
    import ray

    if ray.is_initialized():
        return False
    address = effective_address(ray_cfg.address)
    quiet = not log.isEnabledFor(logging.DEBUG)
    if address == "local":
        need = ray_cfg.workers * ray_cfg.cpus_per_worker
        # address="local": a new cluster, never one found through /tmp/ray/ray_current_cluster
        # (num_cpus is refused when connecting to one)
        ray.init(address="local", num_cpus=max(int(math.ceil(need)), os.cpu_count() or 1),
                 include_dashboard=False, runtime_env=runtime_env, log_to_driver=not quiet)
        return True
    if address != ray_cfg.address:
        log.info("ray.address=local and RAY_ADDRESS=%s: joining that cluster", address)
        check_ray_address(address)
    if address.startswith("ray://"):
        address = client_address(address)
    from ray.exceptions import AuthenticationError

    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=not quiet)
    except (ConnectionError, TimeoutError, AuthenticationError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        hint = ""
        if isinstance(e, ConnectionAbortedError) and address.startswith("ray://"):
            # the client server's session process died at start (ray-project/ray#63202)
            hint = ("; the Ray Client server could not start a session, which happens now and "
                    "then: run it again, or start the cluster with GRPC_ENABLE_FORK_SUPPORT=false")
        elif address != "auto" and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            hint = ("; if the cluster uses token authentication, set RAY_AUTH_MODE=token (and "
                    "its token in ~/.ray/auth_token or RAY_AUTH_TOKEN_PATH)")
        raise DifferlandError(f"ray.address={ray_cfg.address}: cannot join the Ray cluster at "
                              f"{address} ({type(e).__name__}: {first}){hint}") from None
    return True


class Decision(enum.Enum):
    REPLACE = "replace"    # start a new worker in its place and run its work again
    GIVE_UP = "give_up"    # stop the run with WorkersLost


class FailurePolicy:
    """Replace dead workers, up to ``max_restarts_per_worker`` x the number of workers
    replacements over the run (a whole node lost costs one per worker it held)."""

    def __init__(self, max_restarts_per_worker: int, workers: int):
        self.limit = int(max_restarts_per_worker) * max(1, int(workers))
        self.restarts = 0

    def decide(self, worker: int, error: BaseException) -> Decision:
        self.restarts += 1
        return Decision.GIVE_UP if self.restarts > self.limit else Decision.REPLACE


class WorkerPool:
    """The calibration's worker actors.

    Args:
      config: the run's :class:`ExperimentConfig`.
      runtime_env: the workers' Ray runtime environment.
      shape: the compiled call's shape (:class:`~differland_dist.distributed.shard.CallShape`,
        the same on every worker).
      placement_group: reserved bundles (an experiment member); else the actors are spread
        over the cluster's nodes.
    """

    def __init__(self, config, runtime_env: dict, shape: tuple, placement_group=None):
        self.config = config
        self.runtime_env = runtime_env
        self.shape = tuple(int(x) for x in shape)
        self.placement_group = placement_group
        self.policy = FailurePolicy(config.ray.max_worker_restarts, config.ray.workers)
        self.workers: list = []

    @property
    def restarts(self) -> int:
        return self.policy.restarts

    def __len__(self) -> int:
        return len(self.workers)

    def _new(self, w: int):
        rc = self.config.ray
        opts: dict[str, Any] = {"num_cpus": rc.cpus_per_worker, "runtime_env": self.runtime_env}
        if rc.gpus_per_worker:
            opts["num_gpus"] = rc.gpus_per_worker
        if rc.tpus_per_worker:
            opts["resources"] = {"TPU": rc.tpus_per_worker}
        if self.placement_group is not None:  # an experiment member: its reserved bundles
            # imported here: Ray loads only once a cluster is joined (see check_ray_address)
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                self.placement_group, placement_group_bundle_index=w % self.placement_group.bundle_count)
        else:  # one node lost takes as few workers with it as the cluster allows
            opts["scheduling_strategy"] = "SPREAD"
        return make_actor_class().options(**opts).remote(self.config.to_dict(), (), self.shape)

    def start(self, n: int) -> None:
        self.workers = [self._new(w) for w in range(n)]

    def call(self, method: str, jobs: dict[int, tuple], kwargs: dict[int, dict] | None = None
             ) -> dict[int, Any]:
        """``method(*args, **kwargs)`` on the workers of ``jobs`` ({worker: args}), all at
        once; a worker that died is handled by the policy (replaced and its job run again,
        or WorkersLost)."""
        # imported here: Ray loads only once a cluster is joined (see check_ray_address)
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        kwargs = kwargs or {}
        pending = dict(jobs)
        results: dict[int, Any] = {}
        while pending:
            refs = {w: getattr(self.workers[w], method).remote(*args, **kwargs.get(w, {}))
                    for w, args in pending.items()}
            for w, ref in refs.items():
                try:
                    results[w] = ray.get(ref)
                    pending.pop(w)
                except (RayActorError, ActorDiedError, ActorUnavailableError) as e:
                    if self.policy.decide(w, e) is Decision.GIVE_UP:
                        raise WorkersLost(f"workers died {self.restarts} times (limit "
                                          f"{self.config.ray.max_worker_restarts} per worker): {e}") from e
                    log.warning("worker %d died (%s); starting a replacement", w, type(e).__name__)
                    self._kill(w)
                    self.workers[w] = self._new(w)
        return results

    def info(self) -> list[dict]:
        res = self.call("info", {w: () for w in range(len(self.workers))})
        return [res[w] for w in range(len(self.workers))]

    def _kill(self, w: int) -> None:
        # imported here: Ray loads only once a cluster is joined (see check_ray_address)
        import ray

        try:
            ray.kill(self.workers[w])
        except Exception:  # noqa: BLE001 - it may be gone already
            pass

    def shutdown(self) -> None:
        for w in range(len(self.workers)):
            self._kill(w)
        self.workers = []


def start_pool(config, shape: tuple, placement_group=None) -> WorkerPool:
    """Join the cluster (:func:`connect`) and start ``ray.workers`` workers computing calls of
    ``shape``, with the workers' environment (:func:`~differland_dist.distributed.worker.
    worker_env`) under the config's runtime env."""
    rc = config.ray
    # the workers' working directory is the cluster's: a relative store path is the driver's
    config = dataclasses.replace(config, data=dataclasses.replace(
        config.data, url=absolute_url(config.data.url)))
    runtime_env = {k: v for k, v in rc.runtime_env.items() if k != "env_vars"}
    runtime_env["env_vars"] = worker_env(rc)
    connect(rc, runtime_env)
    pool = WorkerPool(config, runtime_env, tuple(shape), placement_group)
    pool.start(rc.workers)
    return pool
