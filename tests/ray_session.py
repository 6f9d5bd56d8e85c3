"""Ray for a test module: join the worker's shared cluster (conftest's ``shared_ray_cluster``,
through ``RAY_ADDRESS``) or, when sharing is off, start a local one of the given size."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager


@contextmanager
def ray_session(num_cpus: int = 2, **kw):
    """Connected for the ``with`` block; left as found if this process was already connected."""
    import ray

    if ray.is_initialized():
        yield
        return
    kw.setdefault("log_to_driver", False)
    with warnings.catch_warnings():  # JAX warns of fork(); Ray forks only to exec
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], **kw)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kw)
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def own_cluster():
    """``RAY_ADDRESS`` unset for the block: ``local`` means a cluster of the test's own."""
    saved = os.environ.pop("RAY_ADDRESS", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved
