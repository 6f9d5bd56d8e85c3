"""Autoscaling (issue 28): ``differland infer`` and ``differland experiment`` on a local
autoscaling cluster (Ray's fake multi-node provider, tests/fake_cluster.py) that starts with
no worker node: it grows when inference starts or members wait for resources and shrinks
when idle. (A worker node lost mid-grid is not tested here yet.) Another Ray cluster of this machine, started meanwhile, survives all of it
(the fake cluster never runs ``ray stop``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fake_cluster import FakeAutoscalingCluster
from synth_fixtures import small_ds, small_store_url  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
CACHE = "/tmp/differland-test-jax-cache"
WORKER_TYPES = {"cpu1": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 3}}

BYSTANDER = """
import sys, ray
ray.init(num_cpus=1, include_dashboard=False)
f = ray.remote(lambda: 42)
print("up", ray.get(f.remote()), flush=True)
sys.stdin.readline()
print("still", ray.get(f.remote()), flush=True)
"""


@pytest.fixture(scope="module")
def bystander():
    """An unrelated Ray cluster in its own process: it must answer after the fake cluster
    has been started and torn down."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    p = subprocess.Popen([sys.executable, "-c", BYSTANDER], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "up 42"
    yield p
    if p.poll() is None:
        p.kill()


@pytest.fixture(scope="module")
def cluster(bystander):
    with FakeAutoscalingCluster(WORKER_TYPES, head_cpus=0, idle_timeout_minutes=0.1) as c:
        yield c
    assert c.pids() == []  # every process of its own is gone ...
    out, _ = bystander.communicate("go\n", timeout=60)
    assert out.strip() == "still 42"  # ... and the other cluster still works


class NodeWatch:
    """The most worker nodes seen while the block runs (polled every 0.2 s)."""

    def __init__(self, cluster):
        self.cluster, self.most, self.first_up = cluster, 0, None
        self._stop = threading.Event()

    def _poll(self):
        t0 = time.monotonic()
        while not self._stop.is_set():
            n = self.cluster.worker_nodes()
            if n and self.first_up is None:
                self.first_up = time.monotonic() - t0
            self.most = max(self.most, n)
            time.sleep(0.2)

    def __enter__(self):
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _cli(args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "differland_dist.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_infer_grows_the_cluster_from_zero_and_it_shrinks_when_idle(cluster, small_store_url, tmp_path):  # noqa: F811
    from random_checkpoint import random_checkpoint

    ckpt = random_checkpoint(small_store_url, str(tmp_path / "network.npz"), config={"loss": {"warm_up": 3}})
    cluster.wait_for_nodes(lambda n: n == 0, 60)
    out = tmp_path / "out.zarr"
    with NodeWatch(cluster) as watch:
        r = _cli(["infer", "--checkpoint", ckpt, "--store", small_store_url, "--out", str(out),
                  "--address", "auto", "--min-actors", "1", "--max-actors", "2",
                  "--pixels-per-task", "16", "--chunk-pixels", "8", "--series", "gpp,lai"], cluster.env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert watch.most >= 1  # grew from no worker node
    import zarr

    assert zarr.open_group(str(out), mode="r").attrs["complete"] is True  # every chunk written
    # idle: back to no worker node (idle_timeout 6 s, autoscaler every 1 s)
    assert cluster.wait_for_nodes(lambda n: n == 0, 120) < 120


def test_experiment_grows_for_queued_members_and_shrinks_when_done(cluster, tmp_path):
    from differland_dist.synthetic import synth_to_store

    store = str(tmp_path / "earth.zarr")
    synth_to_store(store, resolution=15, years=2, seed=5, max_patch_size=8, dev_fraction=0.2,
                   test_fraction=0.2)
    steps = 12
    sets = ["--set", f"base.data.url={store}", "--set", f"base.training.steps={steps}",
            "--set", "base.training.patches_per_step=4", "--set", "base.training.patches_per_call=4",
            "--set", "base.training.eval_every=0", "--set", "base.training.checkpoint_every=3",
            "--set", "base.ray.runtime_env={env_vars: {JAX_COMPILATION_CACHE_DIR: %s}}" % CACHE,
            "--set", "members=2", "--set", "keep_best=1", "--set", "predictor_sets=[[PFT]]"]
    exp = tmp_path / "exp"
    cluster.wait_for_nodes(lambda n: n == 0, 120)
    with NodeWatch(cluster) as watch:
        r = _cli(["experiment", str(ROOT / "configs" / "experiment_demo.yaml"), "--out", str(exp),
                  "--address", "auto", "--skip-ensemble", *sets], cluster.env)
    journal = (exp / "experiment.jsonl").read_text().splitlines() if (exp / "experiment.jsonl").exists() else []
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-4000:], *journal[-4:], sep="\n")
    assert r.returncode == 0
    assert watch.most >= 2  # one node per member (1 CPU each), from none
    for m in ("m000", "m001"):
        run = exp / "members" / "PFT" / m
        assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == steps
        train = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [x["step"] for x in train if x["split"] == "train"] == list(range(1, steps + 1))
    assert cluster.wait_for_nodes(lambda n: n == 0, 120) < 120
