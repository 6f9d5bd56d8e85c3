"""Environment variables of the processes that run JAX for us (Ray actors), passed through
Ray's runtime environment: they must be set before the process imports JAX or starts glibc."""

from __future__ import annotations

import os

from differland_dist.common import allocator


def jax_process_env(platforms: str, cpu_threads: int = 0) -> dict[str, str]:
    """JAX platform, gcsfs and heap settings; on CPUs also the thread count (0: JAX's default).
    ``XLA_FLAGS`` of this (the driver's) environment reach the workers too, after ours, so a
    flag the user set (a dump directory, an optimisation level, their own threading) wins.

    Args:
      platforms: ``JAX_PLATFORMS`` ("cpu", "cuda", "tpu").
      cpu_threads: intra-op threads of XLA:CPU and OpenMP, used when ``platforms`` is "cpu".
    """
    env = {
        "JAX_PLATFORMS": platforms,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        # several actors may share a GPU: allocate on demand, not 75 % up front
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    }
    flags = []
    if platforms == "cpu" and cpu_threads:
        flags.append(f"--xla_cpu_multi_thread_eigen={'true' if cpu_threads > 1 else 'false'} "
                     f"intra_op_parallelism_threads={cpu_threads}")
        env["OMP_NUM_THREADS"] = str(cpu_threads)
    flags.append(os.environ.get("XLA_FLAGS", "").strip())
    if any(flags):
        env["XLA_FLAGS"] = " ".join(f for f in flags if f)
    env.update(allocator.env_vars())  # glibc reads them at process start
    return env
