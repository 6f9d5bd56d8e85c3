"""glibc heap tuning: applied by the CLI, passed to Ray workers, switched off by the variable."""

import os
import subprocess
import sys

import pytest

from differland_dist.common import allocator
from differland_dist.distributed.worker import worker_env

def _tune_in_subprocess(tuning: str) -> str:
    env = dict(os.environ, DIFFERLAND_MALLOC_TUNING=tuning)
    r = subprocess.run([sys.executable, "-c", "from differland_dist.common import allocator; print(allocator.tune())"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_glibc_accepts_the_settings_and_the_switch_turns_them_off():
    # mallopt returns 1 only for values glibc accepts (e.g. M_MMAP_THRESHOLD <= 32 MiB);
    # the effect on speed is measured in benchmarks/bench_core.py (docs/benchmarks.md)
    assert _tune_in_subprocess("1") == "True"
    assert _tune_in_subprocess("0") == "False"


def test_worker_processes_get_the_settings(monkeypatch):
    from differland_dist.config import RayConfig
    from differland_dist.inference.pipeline import InferenceOptions, actor_env

    monkeypatch.setenv("DIFFERLAND_MALLOC_TUNING", "1")
    for env in (worker_env(RayConfig()), actor_env(InferenceOptions())):
        assert int(env["MALLOC_MMAP_THRESHOLD_"]) == allocator.MMAP_THRESHOLD
        assert int(env["MALLOC_TRIM_THRESHOLD_"]) == allocator.TRIM_THRESHOLD
    monkeypatch.setenv("DIFFERLAND_MALLOC_TUNING", "0")
    assert "MALLOC_MMAP_THRESHOLD_" not in worker_env(RayConfig())


def test_worker_processes_keep_the_drivers_xla_flags_after_ours(monkeypatch):
    """The thread pinning is ours; an XLA flag set in the driver's environment reaches the
    workers after it (so it wins), and a runtime_env XLA_FLAGS replaces both."""
    from differland_dist.config import RayConfig

    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    flags = worker_env(RayConfig(cpus_per_worker=1)).get("XLA_FLAGS", "")
    assert flags.startswith("--xla_cpu_multi_thread_eigen=false")
    assert flags.endswith("--xla_backend_optimization_level=0")
    monkeypatch.delenv("XLA_FLAGS")
    assert "optimization_level" not in worker_env(RayConfig(cpus_per_worker=1))["XLA_FLAGS"]
    mine = RayConfig(cpus_per_worker=1, runtime_env={"env_vars": {"XLA_FLAGS": "--mine"}})
    assert worker_env(mine)["XLA_FLAGS"] == "--mine"
