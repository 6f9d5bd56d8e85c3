"""glibc heap tuning: applied by the CLI, passed to Ray workers, switched off by the variable."""

import os
import subprocess
import sys

import pytest

from differland_dist import allocator
from differland_dist.distributed.worker import worker_env

def _tune_in_subprocess(tuning: str) -> str:
    env = dict(os.environ, DIFFERLAND_MALLOC_TUNING=tuning)
    r = subprocess.run([sys.executable, "-c", "from differland_dist import allocator; print(allocator.tune())"],
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
