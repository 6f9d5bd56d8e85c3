"""A small synthetic Earth shared by the data-layer tests (made once per test session).

15 degree grid (67 land pixels), 2 years, patches of at most 8 pixels (21 patches), so that
patches straddle chunk boundaries and the split has several patches on each side.
"""

from __future__ import annotations

import pytest
from differland_dist.storage.location import Location

SMALL = dict(resolution=15.0, years=2, seed=0, max_patch_size=8)


@pytest.fixture(scope="session")
def small_ds():
    """The in-memory Dataset of the small synthetic Earth."""
    from differland_dist.synthetic import make_synthetic

    return make_synthetic(**SMALL)


@pytest.fixture(scope="session")
def small_store_url(small_ds, tmp_path_factory):
    """A local, valid store of the small synthetic Earth (do not modify it: copy it)."""
    from differland_dist.data.store import write_store

    url = str(tmp_path_factory.mktemp("stores") / "small.zarr")
    write_store(small_ds, url)
    return url


@pytest.fixture(scope="module")
def store10(tmp_path_factory):
    """A 10-degree, 2-year synthetic Earth (seed 3): the trainer-scaling and multi-node stores."""
    from differland_dist.synthetic import synth_to_store

    url = str(tmp_path_factory.mktemp("store") / "earth.zarr")
    synth_to_store(url, resolution=10, years=2, seed=3)
    return url


def quick_config(url: str, base: dict, **overrides):
    """A calibration config of the store ``url``: ``base`` then ``overrides`` as ``--set`` keys,
    with the suite's JAX compilation cache passed to the Ray workers."""
    from differland_dist.config import load_config

    cache = "{env_vars: {JAX_COMPILATION_CACHE_DIR: /tmp/differland-test-jax-cache}}"
    sets = {"data.url": url, "ray.runtime_env": cache, **base, **overrides}
    return load_config(None, [f"{k}={v}" for k, v in sets.items()])


def run_calibration(cfg, out, out_storage_options=None, **kw):
    from differland_dist.distributed.trainer import calibrate

    return calibrate(cfg, Location(str(out), out_storage_options), **kw)


def write_cli_config(cfg, path) -> str:
    """``cfg`` as a YAML file for ``differland calibrate`` (returns its path)."""
    import yaml

    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    return str(path)


def calibrate_cli(config_path: str, out, *args: str, env: dict | None = None, timeout: float = 240):
    """``differland calibrate CONFIG --out OUT --no-progress ARGS`` in a subprocess (a driver of
    its own, as a user runs it); the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "differland_dist.cli.main", "calibrate", config_path,
                           "--out", str(out), "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def final_arrays(run_dir) -> dict:
    """Every array of a run's ``network.npz`` (network, standardisation, optimizer state)."""
    from differland_dist.storage import checkpoint

    arrays, _ = checkpoint.load(Location(f"{run_dir}/network.npz"))
    return arrays


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on (now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shard_worker_pids(logs_dir: str) -> set[int]:
    """Pids of the worker processes of a Ray session (its ``logs`` directory) that hosted a
    ShardWorker actor (Ray writes ``:actor_name:ShardWorker`` into their ``worker-*-PID.out``)."""
    import glob
    import os

    found = set()
    for path in glob.glob(os.path.join(logs_dir, "worker-*.out")):
        with open(path, errors="replace") as f:
            if ":actor_name:ShardWorker" in f.read():
                found.add(int(os.path.basename(path)[:-len(".out")].rpartition("-")[2]))
    return found


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
