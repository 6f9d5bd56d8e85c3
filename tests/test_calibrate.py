"""Calibration on a local Ray cluster: determinism across worker counts, resume, faults."""

import json
import os
import signal

import numpy as np
import pytest
from ray_session import ray_session

from differland_dist.config import load_config
from differland_dist.errors import ConfigError, DataValidationError, DifferlandError
from differland_dist.storage.location import Location
from differland_dist.vocabulary.dalec_io import FORCING_NAMES
from storage_servers import gcs_emulator  # noqa: F401  (fixture)

CACHE = "/tmp/differland-test-jax-cache"


@pytest.fixture(scope="module")
def ray_local():
    with ray_session(num_cpus=4, runtime_env={"env_vars": {"JAX_COMPILATION_CACHE_DIR": CACHE}}):
        yield


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    from differland_dist.synthetic import synth_to_store

    url = str(tmp_path_factory.mktemp("store") / "earth.zarr")
    synth_to_store(url, resolution=10, years=2, seed=3)
    return url


def _cfg(url, **kw):
    sets = [f"data.url={url}", "training.steps=4", "training.patches_per_step=5",
            "training.eval_every=2", "training.checkpoint_every=2", "training.seed=7",
            "ray.workers=2", "ray.runtime_env={env_vars: {JAX_COMPILATION_CACHE_DIR: %s}}" % CACHE,
            "training.patches_per_call=1"]  # 5 calls a step: every worker computes
    sets += [f"{k}={v}" for k, v in kw.items()]
    return load_config(None, sets)


def _run(cfg, out, out_storage_options=None, **kw):
    from differland_dist.distributed.trainer import calibrate

    return calibrate(cfg, Location(str(out), out_storage_options), **kw)


@pytest.fixture(scope="module")
def reference(ray_local, small_store, tmp_path_factory):
    """The fault-free 2-worker run everything else is compared with."""
    out = tmp_path_factory.mktemp("ref")
    state, cal = _run(_cfg(small_store), out)
    return state, cal, out


def test_run_directory_contents(reference):
    state, cal, out = reference
    assert state.step == 4
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in lines if m["split"] == "train"]
    test = [m for m in lines if m["split"] == "dev"]
    assert [m["step"] for m in train] == [1, 2, 3, 4] and [m["step"] for m in test] == [2, 4]
    for m in train:
        assert {"loss", "sif", "lai", "nbe", "edc", "violation", "pixel_months_per_s",
                "time_compute_s", "time_comm_s", "time_driver_s"} <= set(m)
        assert m["loss"] == pytest.approx(sum(v for k, v in m.items() if k in
                                               ("sif", "lai", "biomass", "som", "nbe", "nbe_iav", "fire",
                                                "ewt", "gpp_flux", "reco_flux", "et_flux", "et_gleam",
                                                "violation", "edc")), rel=1e-5)
    assert (out / "config.yaml").exists() and (out / "network.npz").exists()
    assert json.loads((out / "checkpoints/latest.json").read_text())["step"] == 4
    from differland_dist.runs.trained import load_trained

    tm = load_trained(Location(str(out)))
    assert tm.step == 4 and tm.config.training.seed == 7
    assert tm.record.data_fingerprint == cal.fingerprint


@pytest.mark.parametrize("workers", [3])  # 1 and 4: tests/test_scaling.py
def test_same_network_with_any_number_of_workers(reference, small_store, tmp_path, workers):
    ref_state = reference[0]
    state, _ = _run(_cfg(small_store, **{"ray.workers": workers}), tmp_path / "w")
    np.testing.assert_array_equal(state.flat, ref_state.flat)


def test_aggregated_gradient_equals_single_process(reference, small_store):
    """The fixed-order sum of per-patch gradients (what the workers return, computed here
    with the same Shard code in-process) = the gradient of one process over the same
    patches in one batch."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from differland_dist.data.batch import predictor_names
    from differland_dist.data.reader import PatchReader
    from differland_dist.data.store import open_store
    from differland_dist.distributed.shard import Shard
    from differland_dist.distributed.policy import step_patches
    from differland_dist.loss import network_loss
    from differland_dist.model.structures import Forcing
    from differland_dist.network import hemisphere_feature

    cfg = _cfg(small_store)
    cal = reference[1]
    flat = np.asarray(cal.checkpoints.last.flat)  # the network at the end of the run
    net = cal.unravel(jnp.asarray(flat))
    patches = step_patches(cal.train_patches, 0, 5, 7)
    shard = Shard(cfg, patches)
    calls = [[p] for p in patches]  # training.patches_per_call=1
    per_call = shard.compute(net, calls, cal.standardizer.mean.astype(np.float32), cal.standardizer.std.astype(np.float32))
    assert [list(p) for p, _, _ in per_call] == calls
    agg = sum(g for _, _, g in per_call)

    store = open_store(small_store)
    reader = PatchReader(store, predictor_names(cfg.data.predictors), cfg.data.products)
    b = reader.read(patches)
    raw = np.concatenate([hemisphere_feature(b.forcing[:, 0, FORCING_NAMES.index("lat")])[:, None], b.predictors], 1)
    x = ((raw - cal.standardizer.mean) / cal.standardizer.std).astype(np.float32)
    local = {p: i for i, p in enumerate(patches)}
    pidx = jnp.asarray([local[int(p)] for p in b.patch], jnp.int32)
    loss_cfg = cfg.loss_for_store(store.steps_per_year)
    (total, _), g = jax.value_and_grad(lambda n: network_loss(
        n, jnp.asarray(x), Forcing.from_array(jnp.asarray(b.forcing)),
        jax.tree.map(jnp.asarray, b.labels), pidx,
        jnp.ones(len(pidx)), len(patches), loss_cfg, cfg.model), has_aux=True)(net)
    single = np.asarray(ravel_pytree(g)[0])
    assert float(total) == pytest.approx(sum(t["loss"] for _, t, _ in per_call), rel=1e-5)
    np.testing.assert_allclose(agg, single, rtol=2e-4, atol=2e-5 * np.abs(single).max())


def test_resume_equals_uninterrupted(reference, small_store, tmp_path):
    out = tmp_path / "r"
    _run(_cfg(small_store, **{"training.steps": 2}), out)         # "killed" after step 2
    state, cal = _run(_cfg(small_store), out, resume=True)        # continue to 4
    np.testing.assert_array_equal(state.flat, reference[0].flat)
    steps = [m["step"] for m in cal.metrics if m["split"] == "train"]
    assert steps == [1, 2, 3, 4]


def test_resume_of_empty_run_dir_starts_fresh(ray_local, small_store, tmp_path):
    state, _ = _run(_cfg(small_store, **{"training.steps": 1}), tmp_path / "fresh", resume=True)
    assert state.step == 1


def test_existing_run_without_resume_is_refused(reference, small_store):
    with pytest.raises(DifferlandError, match="--resume"):
        _run(_cfg(small_store), reference[2])


def test_killed_worker_is_replaced_and_result_unchanged(reference, small_store, tmp_path):
    killed = []

    def kill_one(step, cal):
        if step == 2 and not killed:
            pid = cal.worker_pids()[1]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    state, cal = _run(_cfg(small_store), tmp_path / "k", hooks=[kill_one])
    assert killed and cal.restarts >= 1
    np.testing.assert_array_equal(state.flat, reference[0].flat)


def test_bad_store_fails_at_once(ray_local, tmp_path):
    from differland_dist.synthetic import synth_to_store

    url = str(tmp_path / "bad.zarr")
    synth_to_store(url, resolution=20, years=1, seed=1)
    import zarr

    g = zarr.open_group(url, mode="r+")
    t = g["t_min"]
    t[0, 0] = np.nan
    with pytest.raises(DataValidationError, match="t_min"):
        _run(_cfg(url), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_config_fails_with_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("training:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match="stepz"):
        load_config(p)
    from differland_dist.cli.main import main

    assert main(["calibrate", str(p), "--out", str(tmp_path / "o")]) == 1


def test_nonfinite_steps_are_not_applied_and_bounded(small_store, tmp_path, monkeypatch):
    """Driver logic with a fake gather: NaN losses are skipped / lower the LR / roll back,
    never applied, and give up after max_nonfinite in a row."""
    import jax
    from jax.flatten_util import ravel_pytree

    from differland_dist.distributed import trainer as tr
    from differland_dist.distributed.optim import make_optimizer
    from differland_dist.network.mlp import init_network

    def setup(action, nan_calls):
        cfg = _cfg(small_store, **{"training.on_nonfinite": action, "training.max_nonfinite": 2})
        cal = tr.Calibration(cfg, str(tmp_path / action))
        net = init_network(jax.random.PRNGKey(0), 20, cfg.network)
        flat, cal.unravel = ravel_pytree(net)
        tx = make_optimizer(cfg.optimizer, 4)
        calls = {"n": 0}

        def fake_gather(patches, flat, with_grad, test):
            calls["n"] += 1
            bad = calls["n"] in nan_calls
            g = np.full(flat.shape, np.nan if bad else 0.1, np.float32)
            return [({"loss": float("nan") if bad else 1.0}, g) for _ in patches], 0.0, 0.0, 10

        monkeypatch.setattr(cal, "_gather", fake_gather)
        state = tr.TrainState(np.asarray(flat), tx.init(net), 0)
        cal.checkpoints.start(state)

        @jax.jit
        def apply(f, g, o, s):
            import optax
            n = cal.unravel(f)
            u, o = tx.update(cal.unravel(g), o, n)
            u = jax.tree.map(lambda x: x * s, u)
            return ravel_pytree(optax.apply_updates(n, u))[0], o

        return cal, state, apply

    cal, s0, apply = setup("skip", {1})
    s1 = cal._train_step(s0, apply, None)
    assert s1.step == 1 and s1.skipped == [1] and np.array_equal(s1.flat, s0.flat)
    s2 = cal._train_step(s1, apply, None)
    assert s2.step == 2 and not np.array_equal(s2.flat, s0.flat) and s2.nonfinite_in_a_row == 0
    assert [m["applied"] for m in cal.metrics] == [False, True]

    cal, s0, apply = setup("reduce_lr", {1})
    s1 = cal._train_step(s0, apply, None)
    assert s1.step == 0 and s1.lr_scale == 0.5
    s2 = cal._train_step(s1, apply, None)
    assert s2.step == 1 and s2.lr_scale == 0.5

    cal, s0, apply = setup("rollback", {2})
    s1 = cal._train_step(s0, apply, None)
    s2 = cal._train_step(s1, apply, None)
    assert s2.step == 0 and np.array_equal(s2.flat, s0.flat) and s2.lr_scale == 0.5

    cal, s0, apply = setup("skip", {1, 2, 3, 4})
    s = cal._train_step(s0, apply, None)
    s = cal._train_step(s, apply, None)
    with pytest.raises(tr.TrainingDiverged, match="max_nonfinite"):
        cal._train_step(s, apply, None)


def test_worker_with_two_devices_shards_patches(ray_local, small_store):
    """A worker given several devices splits each call's pixels across them (here two CPU
    devices forced by XLA_FLAGS); per-call terms and gradients agree with one device."""
    import ray

    from differland_dist.distributed.worker import make_actor_class

    cfg = _cfg(small_store, **{"training.patches_per_call": 2})
    W = make_actor_class()
    env2 = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            "JAX_COMPILATION_CACHE_DIR": CACHE}
    env1 = {"JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE}
    from differland_dist.data.store import open_store

    from differland_dist.distributed.shard import call_shape

    store = open_store(small_store)
    ids = [int(p) for p in store.train_patches[:4]]
    sizes = [sl.stop - sl.start for sl in store.patch_slices.values()]
    shape = tuple(call_shape(cfg.training, sizes, n_devices=2))   # rows split evenly over 2
    a2 = W.options(num_cpus=1, runtime_env={"env_vars": env2}).remote(cfg.to_dict(), ids, shape)
    a1 = W.options(num_cpus=1, runtime_env={"env_vars": env1}).remote(cfg.to_dict(), ids, shape)
    info = ray.get(a2.info.remote())
    assert len(info["devices"]) == 2
    sums = ray.get(a1.predictor_sums.remote(ids))
    n = sum(v[0] for v in sums.values())
    mean = sum(v[1] for v in sums.values()) / n
    std = np.ones_like(mean)
    import jax
    from jax.flatten_util import ravel_pytree

    from differland_dist.network.mlp import init_network

    flat = np.asarray(ravel_pytree(init_network(jax.random.PRNGKey(1), 20, cfg.network))[0])
    calls = [ids[:2], ids[2:]]
    r2, _, _ = ray.get(a2.compute.remote(flat, calls, mean.astype(np.float32), std.astype(np.float32)))
    r1, _, _ = ray.get(a1.compute.remote(flat, calls, mean.astype(np.float32), std.astype(np.float32)))
    assert len(r1) == len(r2) == 2
    for (p2, t2, g2), (p1, t1, g1) in zip(r2, r1):
        assert p1 == p2
        assert t2["loss"] == pytest.approx(t1["loss"], rel=1e-5)
        # float32 sums over a call's pixels, split over two devices, add in another order: a
        # few of the largest gradient entries (~3e7, untrained network) differ by ~1e-3
        np.testing.assert_allclose(g2, g1, rtol=3e-3, atol=1e-5 * np.abs(g1).max())
    ray.kill(a1), ray.kill(a2)


def test_run_directory_on_object_storage(ray_local, small_store, gcs_emulator):
    """RUN_DIR as a gs:// URL (the GCS emulator): checkpoints, metrics, config and resume."""
    import fsspec

    from differland_dist.runs.trained import load_trained

    url = f"gs://{gcs_emulator['bucket']}/runs/r1"
    so = gcs_emulator["storage_options"]
    cfg = _cfg(small_store, **{"training.steps": 2, "training.checkpoint_every": 1})
    state, _ = _run(cfg, url, out_storage_options=so)
    fs = fsspec.filesystem("gs", **so)
    names = {p.rsplit("/", 1)[-1] for p in fs.find(f"{gcs_emulator['bucket']}/runs/r1")}
    assert {"config.yaml", "metrics.jsonl", "network.npz", "latest.json",
            "step_00000001.npz", "step_00000002.npz"} <= names
    assert not any(".tmp-" in n for n in names)
    tm = load_trained(Location(url, so))
    assert tm.step == 2
    state2, _ = _run(_cfg(small_store, **{"training.steps": 3, "training.checkpoint_every": 1}), url,
                     resume=True, out_storage_options=so)
    assert state2.step == 3


def test_keep_best_dev_selects_the_lowest_dev_loss_and_survives_resume(ray_local, small_store, tmp_path):
    """training.keep=best_dev: network.npz is the network of the evaluation with the lowest dev
    loss (the checkpoint of that step), and a run interrupted after that step and resumed
    selects the same network, bit for bit."""
    from differland_dist.storage import checkpoint
    from differland_dist.experiment.runner import final_losses
    from differland_dist.storage.location import Location

    over = {"training.steps": 6, "training.eval_every": 1, "training.checkpoint_every": 1,
            "training.keep": "best_dev", "optimizer.learning_rate": 0.05}
    _run(_cfg(small_store, **over), tmp_path / "a")
    dev = [(m["step"], m["loss"]) for m in map(json.loads, (tmp_path / "a" / "metrics.jsonl").read_text().splitlines())
           if m["split"] == "dev"]
    best_step, best_loss = min(dev, key=lambda r: r[1])
    assert best_step < 6  # at this learning rate the dev loss rises again: the last is not kept
    net, meta = checkpoint.load(Location(str(tmp_path / "a" / "network.npz")))
    assert meta["selected"] == {"by": "best_dev", "step": best_step, "dev_loss": best_loss}
    at_best, _ = checkpoint.load(Location(str(tmp_path / "a" / "checkpoints" / f"step_{best_step:08d}.npz")))
    for k in net:
        np.testing.assert_array_equal(net[k], at_best[k])
    # the experiment ranks the member by the kept network's dev loss
    assert final_losses(Location(str(tmp_path / "a")), "best_dev")[1] == best_loss
    assert final_losses(Location(str(tmp_path / "a")))[1] == dev[-1][1]
    # interrupted after 3 steps, resumed to 6: the same selection
    _run(_cfg(small_store, **{**over, "training.steps": 3}), tmp_path / "b")
    _run(_cfg(small_store, **over), tmp_path / "b", resume=True)
    net_b, meta_b = checkpoint.load(Location(str(tmp_path / "b" / "network.npz")))
    assert meta_b["selected"] == meta["selected"]
    for k in net:
        np.testing.assert_array_equal(net[k], net_b[k])
