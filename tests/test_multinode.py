"""Calibration on a Ray cluster of several nodes on this machine (``ray.cluster_utils.Cluster``):
workers spread over nodes, a whole node lost mid-run, and every form of ``ray.address``.

The cluster lives under its own ``RAY_TMPDIR``, so its address file never reaches another
process's ``ray.init()`` on this machine.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from synth_fixtures import quick_config, run_calibration, store10  # noqa: F401 - fixture

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
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1) for _ in range(3)]   # two workers, one spare node
    c.wait_for_nodes()
    try:
        yield c, nodes
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old


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


def test_workers_spread_and_a_lost_node_changes_nothing(cluster, store10, tmp_path):
    c, nodes = cluster
    _disconnect()
    ref, _ = _run(_cfg(store10, **{"ray.address": c.address}), tmp_path / "ref")
    _disconnect()
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
