"""Many optimizer updates in one worker call (``training.updates_per_call``, issue 28): the
same bits as one update per call, resume and a replaced worker unchanged, the non-finite
policy on the same steps, bad settings refused."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from ray_session import ray_session

from differland_dist.errors import ConfigError
from synth_fixtures import quick_config, run_calibration, store10  # noqa: F401 - fixture

CACHE = "/tmp/differland-test-jax-cache"

# 6 steps of 4 patches in 2 calls; checkpoints every 3 steps: with K = 4, two calls of 3
# updates (one compiled program)
BASE = {"training.steps": 6, "training.patches_per_step": 4, "training.patches_per_call": 2,
        "training.eval_every": 0, "training.checkpoint_every": 3, "training.seed": 5,
        "ray.workers": 1}


@pytest.fixture(scope="module")
def ray_local():
    with ray_session(num_cpus=2, runtime_env={"env_vars": {"JAX_COMPILATION_CACHE_DIR": CACHE}}):
        yield


@pytest.fixture(scope="module")
def single(ray_local, store10, tmp_path_factory):
    """One update per call: the reference."""
    return run_calibration(quick_config(store10, BASE), tmp_path_factory.mktemp("k1") / "run")


@pytest.fixture(scope="module")
def multi(ray_local, store10, tmp_path_factory):
    """Up to 4 updates per call (chunks of 3 and 3: the checkpoints cut them)."""
    out = tmp_path_factory.mktemp("k4") / "run"
    return (*run_calibration(quick_config(store10, BASE, **{"training.updates_per_call": 4}), out), out)


def _train(cal):
    return [m for m in cal.metrics if m["split"] == "train"]


def test_chunks_stop_at_evaluations_checkpoints_and_the_end():
    from differland_dist.distributed.multistep import chunk_length, padded_length

    assert [padded_length(n) for n in range(1, 14)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]

    assert chunk_length(0, 7, 4, 0, 3) == 3 and chunk_length(3, 7, 4, 0, 3) == 3
    assert chunk_length(6, 7, 4, 0, 3) == 1
    assert chunk_length(0, 100, 8, 5, 0) == 5 and chunk_length(5, 100, 8, 0, 0) == 8
    assert chunk_length(2, 100, 32, 10, 4) == 2


def test_same_bits_as_one_update_per_call(single, multi):
    """XLA compiles the scanned program's per-call gradient, fixed-order sum and optax
    update to the same bits as the separate calls (measured: identical on CPU)."""
    (s1, c1), (s4, c4, _) = single, multi
    assert s4.step == s1.step == 6
    np.testing.assert_array_equal(s4.flat, s1.flat)
    import jax

    for a, b in zip(jax.tree.leaves(s4.opt_state), jax.tree.leaves(s1.opt_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    t1, t4 = _train(c1), _train(c4)
    assert [m["step"] for m in t4] == list(range(1, 7))
    assert [m["updates_per_call"] for m in t4] == [3] * 6
    for a, b in zip(t1, t4):  # the records: the same losses and sizes, step by step
        assert {k: a[k] for k in ("loss", "sif", "patches", "pixel_months", "calls", "applied")} == \
               {k: b[k] for k in ("loss", "sif", "patches", "pixel_months", "calls", "applied")}
    assert {m["calls"] for m in t4} == {2}  # steps of several calls were summed in the program


def test_resume_and_replaced_worker_give_the_same_bits(multi, store10, tmp_path):
    ref = multi[0].flat
    k4 = {"training.updates_per_call": 4}
    out = tmp_path / "r"
    run_calibration(quick_config(store10, BASE, **{"training.steps": 3}, **k4), out)  # "killed" at 3
    state, cal = run_calibration(quick_config(store10, BASE, **k4), out, resume=True)
    np.testing.assert_array_equal(state.flat, ref)
    assert [m["step"] for m in _train(cal)] == list(range(1, 7))

    killed = []

    def kill(step, cal):
        if step == 3 and not killed:
            pid = cal.worker_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    state, cal = run_calibration(quick_config(store10, BASE, **k4), tmp_path / "k", hooks=[kill])
    assert killed and cal.restarts >= 1
    np.testing.assert_array_equal(state.flat, ref)


def test_updates_per_call_needs_one_worker(store10, tmp_path):
    from differland_dist.distributed.trainer import Calibration

    with pytest.raises(ConfigError, match="updates_per_call=4.*ray.workers=1"):
        Calibration(quick_config(store10, BASE, **{"training.updates_per_call": 4, "ray.workers": 2}),
                    str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="training.updates_per_call"):
        quick_config(store10, BASE, **{"training.updates_per_call": 0})


def _fake_call(total, grad):
    """A per-call function of the shard's signature whose loss and gradient are read from
    the call's predictors: total = pred[0, 0], gradient = pred[0, 1] * (1 ... P)."""
    import jax.numpy as jnp

    def call_fn(net, pred, forcing, stack, patch, valid, mean, std, test):
        return (pred[0, 0], {"x": pred[0, 0] * 2}), pred[0, 1] * grad

    return call_fn


def test_program_stops_applying_at_the_first_nonfinite_step():
    """The scanned program against a Python loop of the driver's update: a NaN gradient in
    step 2 (of 4, 2 calls each) leaves the network and optimizer after step 1, reports the
    steps' finiteness and step 2's gradient."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from differland_dist.config import OptimizerConfig
    from differland_dist.distributed import multistep
    from differland_dist.distributed.optim import make_optimizer

    net = {"a": jnp.arange(3, dtype=jnp.float32), "b": jnp.ones((2, 2), jnp.float32)}
    flat, unravel = ravel_pytree(net)
    P = flat.size
    tx = make_optimizer(OptimizerConfig(), 10)
    base = jnp.arange(1, P + 1, dtype=jnp.float32) / P
    C = 8
    last = np.array([False, True] * 4)
    pred = np.zeros((C, 1, 2), np.float32)
    pred[:, 0, 0] = np.arange(C) + 1.0        # losses
    pred[:, 0, 1] = np.linspace(0.5, 2.0, C)  # gradient scales
    pred[5, 0, 1] = np.nan                    # step 2's second call
    # two padding calls (live False) full of NaN: skipped
    pad = np.concatenate([pred, np.full((2, 1, 2), np.nan, np.float32)])
    zeros = lambda *s: jnp.zeros((C + 2,) + s, jnp.float32)  # noqa: E731
    prog = multistep.scan_updates(_fake_call(None, base), tx, unravel)
    out = prog(flat, tx.init(net), jnp.float32(1.0), jnp.asarray(pad), zeros(1), zeros(1), zeros(1),
               zeros(1), jnp.asarray(np.r_[last, True, True]), jnp.arange(C + 2) < C, jnp.zeros(2),
               jnp.ones(2))
    f, o, totals, terms, finite, bad = out
    assert [bool(x) for x in finite[C:]] == [True, True] and list(totals[C:]) == [0, 0]
    totals, terms, finite = totals[:C], {k: v[:C] for k, v in terms.items()}, finite[:C]
    # each step's own finiteness; nothing is applied after the first bad step
    assert [bool(x) for x, l in zip(finite, last) if l] == [True, True, False, True]
    # the driver's loop: steps 0 and 1 applied
    ref_f, ref_o = flat, tx.init(net)
    apply = jax.jit(lambda f, g, o: multistep.apply_update(tx, unravel, f, g, o, jnp.float32(1.0)))
    for s in range(2):
        g = jnp.zeros(P) + pred[2 * s, 0, 1] * base + pred[2 * s + 1, 0, 1] * base
        ref_f, ref_o = apply(ref_f, g, ref_o)
    np.testing.assert_array_equal(np.asarray(f), np.asarray(ref_f))
    for a, b in zip(jax.tree.leaves(o), jax.tree.leaves(ref_o)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.isnan(np.asarray(bad)).all()
    np.testing.assert_array_equal(np.asarray(totals), pred[:, 0, 0])
    np.testing.assert_array_equal(np.asarray(terms["x"]), pred[:, 0, 0] * 2)


def test_driver_applies_the_nonfinite_policy_on_the_bad_step(multi, store10, tmp_path, monkeypatch):
    """A chunk whose second step was not finite: the first step is recorded and kept, the
    second recorded as not applied and handed to the policy (skip: counted, the rest of the
    chunk recomputed in the next call)."""
    from differland_dist.distributed import multistep
    from differland_dist.distributed import trainer as tr

    cfg = quick_config(store10, BASE, **{"training.updates_per_call": 4})
    cal = tr.Calibration(cfg, str(tmp_path / "nf"))
    state0 = multi[0]
    cal.standardizer = multi[1].standardizer
    cal.rundir.reset_metrics(None)
    leaves = multistep.state_leaves(state0.opt_state)
    new = state0.flat + 1

    def fake_call(method, jobs, kwargs=None):
        flat, opt_leaves, lr, calls, last, mean, std = jobs[0]
        n_steps = sum(last)
        terms = [{"loss": 1.0 if i < sum(last[:last.index(True) + 1]) else float("nan")}
                 for i in range(len(calls))]
        bad = np.full(flat.shape, np.nan, np.float32)
        return {0: (new, leaves, terms, [True] + [False] * (n_steps - 1), bad, 0.1, 10)}

    monkeypatch.setattr(cal, "_call", fake_call)
    s = tr.TrainState(state0.flat, state0.opt_state, 0)
    s = cal._train_updates(s, 3, None)
    assert s.step == 2 and s.skipped == [2] and s.nonfinite_in_a_row == 1
    np.testing.assert_array_equal(s.flat, new)
    recs = _train(cal)
    assert [(m["step"], m["applied"]) for m in recs] == [(1, True), (2, False)]
    assert "loss is NaN" in recs[1]["nonfinite"] and "gradient has" in recs[1]["nonfinite"]
    json.dumps(recs)  # records stay JSON
