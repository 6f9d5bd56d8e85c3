"""Shared test setup. Environment first: gcsfs and JAX read these at import time."""

import os
import sys
from pathlib import Path

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# JAX's persistent compilation cache, shared by the test process, its subprocesses and Ray
# workers (they inherit the environment): the suite compiles the same rollouts many times.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", "/tmp/differland-test-jax-cache")
# A size limit turns on JAX's file lock around cache reads and writes, which the processes that
# share the cache at the same time (pytest-xdist workers, Ray workers, subprocesses) need.
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))
# The suite runs in two pytest-xdist workers (pyproject's addopts). `ray.init()` without an
# address joins the newest `ray start` cluster recorded in Ray's temp dir, so each worker gets
# its own temp dir: a test's own cluster is never another worker's.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("RAY_TMPDIR", f"/tmp/rt-{os.environ['PYTEST_XDIST_WORKER']}")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIFFERLAND_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(Path(__file__).parent))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def shared_ray_cluster():
    """One Ray cluster per pytest-xdist worker, joined through ``RAY_ADDRESS`` by every run
    whose ``ray.address`` is ``local`` (the trainer, the experiment runner and inference defer
    to it, as on a Ray job's driver) and by the module fixtures of tests/ray_session.py:
    starting a local cluster costs 7-20 s on the 2-core machine, joining one under a second.
    Tests of cluster forms, lost nodes, autoscaling and fake GPUs start their own and unset
    ``RAY_ADDRESS`` there. Off unless ``DIFFERLAND_TEST_SHARED_CLUSTER=1``: the whole suite
    took as long with it (15 min 03 s and 15 min 19 s against 15 min 12 s without), and on one
    of three runs the `ray start` head of tests/test_addresses.py died beside the two shared
    clusters (not understood yet)."""
    if not os.environ.get("DIFFERLAND_TEST_SHARED_CLUSTER") or os.environ.get("RAY_ADDRESS"):
        yield None
        return
    import shutil
    import subprocess

    tmp = f"/tmp/rs-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{os.getpid()}"
    address = f"127.0.0.1:{_free_port()}"
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    # one authentication mode for the cluster and all its drivers (a driver in token mode has
    # its actors cancelled on a cluster without tokens)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    # 8 logical CPUs: the most workers a test asks for, whatever the machine's cores
    subprocess.run([ray_cli, "start", "--head", f"--port={address.split(':')[1]}", "--num-cpus=8",
                    "--include-dashboard=false", f"--temp-dir={tmp}", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=180)
    os.environ["RAY_ADDRESS"] = address
    try:
        yield address
    finally:
        import signal
        import time

        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        # `ray stop` would stop every cluster on the machine: end only this one's processes
        ours = []
        for d in Path("/proc").glob("[0-9]*"):
            try:
                if tmp.encode() in (d / "cmdline").read_bytes():
                    ours.append(int(d.name))
            except OSError:
                pass
        for pid in ours:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(1)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.fail(f"shared data not found at {SHARED} (set DIFFERLAND_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def golden_monthly(shared_dir):
    import numpy as np

    return dict(np.load(shared_dir / "golden" / "dalec993_monthly.npz"))


@pytest.fixture(scope="session")
def golden_daily(shared_dir):
    import numpy as np

    return dict(np.load(shared_dir / "golden" / "dalec993_daily.npz"))


# Longest files first: pytest-xdist (--dist loadfile) hands whole files to workers in
# collection order, so a long file collected last would run alone at the end. Seconds per file
# as measured on the 2-core development VM (2026-11-29); files not listed keep their order, last.
FILE_SECONDS = {
    "test_calibrate.py": 450, "test_experiment.py": 300, "test_storage_faults.py": 300, "test_run_safety.py": 200,
    "test_multinode.py": 180, "test_paper_parity.py": 170, "test_scaling.py": 150,
    "test_loss.py": 150, "test_demo.py": 130, "test_outputs_cf.py": 110, "test_paper_data.py": 90,
    "test_parity.py": 80, "test_cli_core.py": 70, "test_inference.py": 70, "test_evaluation.py": 70,
    "test_analysis.py": 60, "test_data_store.py": 50, "test_member_batch.py": 40,
    "test_addresses.py": 80, "test_paper_skill.py": 40, "test_labels.py": 25,
}


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))  # stable: file order kept
