"""Calibration on a Ray cluster of several nodes on this machine (``ray.cluster_utils.Cluster``):
workers spread over nodes, a whole node lost mid-run, and every form of ``ray.address``.

The cluster lives under its own ``RAY_TMPDIR``, so its address file never reaches another
process's ``ray.init()`` on this machine, and keeps one authentication mode for the module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from synth_fixtures import (final_arrays, process_alive, quick_config, run_calibration,  # noqa: F401
                            shard_worker_pids, store10, write_cli_config)
from differland_dist.storage.location import Location

TMP = "/tmp/dl-multinode"   # short: Ray's socket paths live under it


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    old = os.environ.get("RAY_TMPDIR")
    os.makedirs(TMP, exist_ok=True)
    os.environ["RAY_TMPDIR"] = TMP
    # One authentication mode for the cluster and every driver of the module. A local
    # ray.init() (the "local" address form) switches this process to token mode by setting
    # RAY_AUTH_MODE=token unless the mode is set; drivers joining this cluster afterwards (in
    # this process or its subprocesses) would then have their actors cancelled at creation.
    # If an earlier ray.init() here already chose token mode, that mode is kept.
    old_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # the worker's shared cluster (conftest) is not this module's: "local" starts its own here
    old_address = os.environ.pop("RAY_ADDRESS", None)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1) for _ in range(3)]   # two workers, one spare node
    c.wait_for_nodes()
    try:
        yield c, nodes
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        for var, value in (("RAY_TMPDIR", old), ("RAY_AUTH_MODE", old_auth), ("RAY_ADDRESS", old_address)):
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


BASE = {"training.steps": 4, "training.patches_per_step": 4,
        "training.patches_per_call": 1, "training.eval_every": 0, "training.checkpoint_every": 2,
        "training.seed": 3, "ray.workers": 2}


def _cfg(url, **kw):
    return quick_config(url, BASE, **kw)


_run = run_calibration


def _disconnect():
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(cluster, store10, tmp_path_factory):
    """The uninterrupted run of ``BASE`` on the cluster: (final state, run directory)."""
    c, _ = cluster
    _disconnect()
    out = tmp_path_factory.mktemp("ref") / "ref"
    state, _ = _run(_cfg(store10, **{"ray.address": c.address}), out)
    _disconnect()
    return state, out


def test_workers_spread_and_a_lost_node_changes_nothing(cluster, reference, store10, tmp_path):
    c, nodes = cluster
    ref = reference[0]
    placed, lost = [], []

    def kill_a_node(step, cal):
        info = cal.worker_info()
        placed.append([i["node_id"] for i in info])
        if step == 2 and not lost:
            victim = next(n for n in nodes if n.node_id == info[1]["node_id"])
            c.remove_node(victim)          # the raylet and every process of that node
            lost.append(victim.node_id)

    state, cal = _run(_cfg(store10, **{"ray.address": c.address}), tmp_path / "kill", hooks=[kill_a_node])
    _disconnect()
    assert len(set(placed[0])) == 2                      # one worker per node
    assert lost and lost[0] not in placed[-1] and cal.restarts >= 1
    np.testing.assert_array_equal(state.flat, ref.flat)
    # the driver gone after step 2: --resume on the cluster finishes with the same network
    _run(_cfg(store10, **{"ray.address": c.address, "training.steps": 2}), tmp_path / "res")
    _disconnect()
    resumed, _ = _run(_cfg(store10, **{"ray.address": c.address}), tmp_path / "res", resume=True)
    _disconnect()
    np.testing.assert_array_equal(resumed.flat, ref.flat)


@pytest.mark.parametrize("form", ["host:port", "RAY_ADDRESS", "local"])
def test_every_address_form(cluster, store10, tmp_path, monkeypatch, form):
    """host:port / RAY_ADDRESS join the running cluster; the default ``local`` starts
    its own even though a cluster is running (it used to crash: num_cpus while connecting)."""
    import ray

    c, _ = cluster
    _disconnect()
    address = {"host:port": c.address, "RAY_ADDRESS": "local", "local": "local"}[form]
    if form == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", c.address)
    nodes = []
    state, _ = _run(_cfg(store10, **{"ray.address": address, "training.steps": 1, "ray.workers": 1}),
                    tmp_path / "r", hooks=[lambda s, cal: nodes.extend(i["node_id"] for i in cal.worker_info())])
    here = {n["NodeID"] for n in ray.nodes()}
    gcs = ray.get_runtime_context().gcs_address
    _disconnect()
    assert state.step == 1 and nodes and set(nodes) <= here
    if form == "local":
        assert gcs != c.address        # a cluster of its own
    else:
        assert gcs == c.address


def test_a_killed_driver_resumes_to_the_same_network(cluster, reference, store10, tmp_path):
    """``differland calibrate`` joins the cluster as a driver process of its own and is
    SIGKILLed once its first checkpoint is written; Ray ends the workers it left (non-detached
    actors of a dead job), and ``--resume --force`` (the dead driver's lease is stale) finishes
    with the uninterrupted run's network."""
    c, _ = cluster
    _disconnect()
    logs = c.head_node.get_logs_dir_path()
    cfg = write_cli_config(_cfg(store10, **{"ray.address": c.address, "training.checkpoint_every": 1}),
                           tmp_path / "cfg.yaml")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "differland_dist.cli.main", "calibrate", cfg, "--out", str(out),
           "--no-progress"]
    before = shard_worker_pids(logs)
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + 180
    while not latest.exists():
        assert driver.poll() is None, driver.stderr.read()[-3000:]
        assert time.time() < deadline, "no checkpoint within 180 s"
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    driver.stderr.close()
    assert not (out / "network.npz").exists()         # killed mid-run, not after it
    orphans = shard_worker_pids(logs) - before
    assert len(orphans) == BASE["ray.workers"], orphans
    deadline = time.time() + 60
    while any(process_alive(p) for p in orphans):
        assert time.time() < deadline, f"the dead driver's workers {orphans} still run"
        time.sleep(0.2)

    # the dead driver's lease is stale: taking it over needs --force, as its error says
    r = subprocess.run(cmd + ["--resume", "--force"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stderr
    mine, ref = final_arrays(out), final_arrays(reference[1])
    assert sorted(mine) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(mine[k], ref[k], err_msg=k)


def test_a_run_directory_from_before_pixels_per_call_resumes(cluster, store10, tmp_path):
    """A run directory written before ``training.pixels_per_call`` existed (its saved configs
    lack the key) resumes when the key is at its default, and still refuses a changed value."""
    from differland_dist.storage import checkpoint
    from differland_dist.errors import CheckpointError

    c, _ = cluster
    _disconnect()
    kw = {"ray.address": c.address, "ray.workers": 1, "training.steps": 1}
    out = tmp_path / "old"
    _run(_cfg(store10, **kw), out)
    _disconnect()
    for ck in (out / "checkpoints" / "step_00000001.npz", out / "network.npz"):
        arrays, meta = checkpoint.load(Location(str(ck)))
        del meta["config"]["training"]["pixels_per_call"]
        checkpoint.save(Location(str(ck)), arrays, meta)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["training"]["pixels_per_call"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))

    with pytest.raises(CheckpointError, match=r"config differs from the checkpoint's in \['training'\]"):
        _run(_cfg(store10, **{**kw, "training.steps": 2, "training.pixels_per_call": 4096}), out,
             resume=True)
    _disconnect()
    state, cal = _run(_cfg(store10, **{**kw, "training.steps": 2}), out, resume=True)
    _disconnect()
    assert state.step == 2 and [m["step"] for m in cal.metrics if m["split"] == "train"] == [1, 2]
