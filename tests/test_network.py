"""The spatialisation network: parity with the published weights, init, import, refusal."""

import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from differland_dist.errors import CheckpointError
from differland_dist.network import (NetworkConfig, Standardizer, apply_network, init_network,
                                     network_from_arrays, to_parameters)
from differland_dist.network.io import load_network
from differland_dist.network.published import load_published_network
from differland_dist.network.standardize import column_scale
from differland_dist.storage.location import Location


def _check_params(net, g):
    p = to_parameters(apply_network(net, jnp.asarray(g["net_predictors"])))
    np.testing.assert_allclose(np.asarray(p.process.stack()), g["net_dalec_params"], rtol=1e-5)
    np.testing.assert_allclose(np.stack(p.phenology, -1), g["net_pheno_params"], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(p.initial_pools.stack()), g["net_initial_pools"], rtol=1e-5)


def test_golden_weights_give_golden_parameters(golden_monthly):
    _check_params(network_from_arrays(golden_monthly), golden_monthly)


def test_import_published_pickle_cli(shared_dir, tmp_path, golden_monthly):
    src = shared_dir / "data/published_network/dalec993_PFT+CLIM+SOIL+AGE_run_1.pickle"
    out = tmp_path / "net.npz"
    r = subprocess.run([sys.executable, "-m", "differland_dist.cli.main", "import-checkpoint",
                        str(src), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    net, cfg, std = load_network(Location(str(out)))
    assert cfg == NetworkConfig() and std is None
    _check_params(net, golden_monthly)
    # the file we wrote is not a pickle: numpy refuses to unpickle anything in it
    with np.load(out, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [
    Evil(),
    {"weights": np.array([__import__("operator").add], dtype=object)},  # names a function
    __import__("collections").OrderedDict(a=1),     # any other class
])
def test_pickle_naming_other_classes_is_refused(payload):
    data = pickle.dumps(payload)
    with pytest.raises(CheckpointError, match="refused"):
        load_published_network(data, source="evil.pickle")


def test_refusal_via_cli(tmp_path):
    bad = tmp_path / "bad.pickle"
    bad.write_bytes(pickle.dumps(Evil()))
    r = subprocess.run([sys.executable, "-m", "differland_dist.cli.main", "import-checkpoint",
                        str(bad), "--out", str(tmp_path / "x.npz")], capture_output=True, text=True)
    assert r.returncode == 1
    assert "refused to unpickle posix.system" in r.stderr
    assert "pwned" not in r.stdout
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("cfg", [NetworkConfig(), NetworkConfig(hidden_layers=2, width=16, activation="tanh")])
def test_init_architecture(cfg):
    net = init_network(jax.random.PRNGKey(0), 20, cfg)
    assert len(net.embed) == cfg.hidden_layers
    assert net.embed[0].weights.shape == (20, cfg.width)
    assert net.pheno_head.weights.shape == (cfg.width + 1, 2)
    assert all(np.all(l.biases == 1) for l in net.embed)
    x = apply_network(net, jnp.ones((5, 21)), cfg.activation)
    assert x.x_dalec.shape == (5, 31) and x.x_pools.shape == (5, 7) and x.x_pheno.shape == (5, 2)
    # Glorot normal: std ~ sqrt(2 / (fan_in + fan_out))
    w = np.asarray(net.embed[0].weights)
    assert 0.5 < w.std() / np.sqrt(2 / (20 + cfg.width)) < 1.5


def test_head_init_scale_flattens_the_initial_maps_and_keeps_the_default():
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 21))
    ref = init_network(jax.random.PRNGKey(0), 20)                     # the paper's initialisation
    same = init_network(jax.random.PRNGKey(0), 20, NetworkConfig(head_init_scale=1.0))
    flat = init_network(jax.random.PRNGKey(0), 20, NetworkConfig(head_init_scale=0.1))
    zero = init_network(jax.random.PRNGKey(0), 20, NetworkConfig(head_init_scale=0.0))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(same)))
    for a, b in zip(ref.embed, flat.embed):                            # only the heads change
        assert np.array_equal(a.weights, b.weights)
    np.testing.assert_allclose(flat.dalec_head.weights, 0.1 * ref.dalec_head.weights, rtol=1e-6)
    assert np.all(flat.pheno_head.biases == 1)
    sd = lambda n: np.asarray(apply_network(n, x).x_dalec).std(axis=0)  # noqa: E731 (spatial sd)
    np.testing.assert_allclose(sd(flat), 0.1 * sd(ref), rtol=1e-4)
    assert np.all(sd(zero) == 0) and np.all(sd(ref) > 0.05)


def test_bad_network_config():
    with pytest.raises(ValueError, match="network.activation"):
        NetworkConfig(activation="sigmoidish")


def test_standardizer_uses_training_stats_and_handles_constant_columns():
    raw = np.array([[1.0, 5.0], [3.0, 5.0]])
    s = Standardizer.fit(["a", "b"], raw)
    np.testing.assert_allclose(s.apply(raw), [[-1, 0], [1, 0]])
    np.testing.assert_allclose(s.apply(np.array([[5.0, 6.0]])), [[3, 1]])


def test_one_standardisation_rule_for_pixels_sums_and_tables():
    """fit (the pixels), from_sums (the trainer's per-patch sums) and of (published tables)
    share one constant-column rule: a column whose std is rounding noise is centred, not
    scaled, and a varying one is scaled by its std."""
    rng = np.random.default_rng(0)
    raw = np.c_[rng.normal(3.0, 2.0, 500), np.full(500, -2.5), rng.normal(-1.0, 1e-3, 500)]
    a = Standardizer.fit(["a", "b", "c"], raw)
    b = Standardizer.from_sums(["a", "b", "c"], len(raw), raw.sum(0), (raw * raw).sum(0))
    c = Standardizer.of(["a", "b", "c"], raw.mean(0), np.r_[raw.std(0)[0], 1e-14, raw.std(0)[2]])
    for s in (a, b, c):
        assert s.std[1] == 1.0                       # constant (or noise-level) column: unscaled
        np.testing.assert_allclose(s.std[[0, 2]], raw.std(0)[[0, 2]], rtol=1e-6)
        np.testing.assert_allclose(s.mean, raw.mean(0), rtol=1e-12)
    assert column_scale([0.1, 5.0], [1e-17, 1e-11]).tolist() == [1.0, 1e-11]


def test_checkpoint_record_round_trip(tmp_path):
    """One typed record is written and read back; what the format adds goes to written_by."""
    from differland_dist.storage import checkpoint
    from differland_dist.storage.checkpoint import CheckpointRecord

    rec = CheckpointRecord(kind="training", step=3, config={"a": 1}, skipped=(2,),
                           predictor_names=("hemisphere", "x"), best_dev={"step": 2, "dev_loss": 0.5})
    where = Location(str(tmp_path / "c.npz"))
    checkpoint.write(where, {"w": np.zeros(2, np.float32)}, rec)
    arrays, back = checkpoint.read(where)
    assert back == rec and back.skipped == (2,) and back.predictor_names == ("hemisphere", "x")
    assert back.written_by["format"] == checkpoint.FORMAT and "config_sha256" in back.written_by
    assert "lr_scale" not in checkpoint.load(where)[1]   # None fields are not written
