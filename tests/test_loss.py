"""Loss and rollout properties: FD gradient, lean = full, checkpointing, patch batches."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from differland_dist.vocabulary.labels import Labels
from differland_dist.loss import TERMS, LossConfig, loss_from_x, loss_terms, required_series
from differland_dist.model import rollout, simulate
from differland_dist.vocabulary.dalec_io import OUTPUTS
from differland_dist.model.config import ModelConfig, PARITY_MODEL
from differland_dist.model.structures import Forcing, Parameters
from differland_dist.network import NetworkOutputs

ALL_ON = LossConfig(enabled={t: True for t in TERMS})


def _small(g, P=4, T=48):
    X = NetworkOutputs(jnp.asarray(g["x_dalec"][:P]), jnp.asarray(g["x_pheno"][:P]), jnp.asarray(g["x_pools"][:P]))
    return (X, Forcing.from_array(jnp.asarray(g["met"][:P, :T])),
            Labels.from_published(jnp.asarray(g["labels"][:P, :T])))


def test_gradient_matches_finite_differences(golden_monthly):
    """Central differences in float64 on a small case agree with autodiff."""
    with jax.enable_x64(True):
        X, f, lab = _small(golden_monthly)
        X = jax.tree.map(lambda a: a.astype(jnp.float64), X)
        f = jax.tree.map(lambda a: a.astype(jnp.float64), f)
        lab = jax.tree.map(lambda a: a.astype(jnp.float64), lab)
        P = X.x_dalec.shape[0]
        cfg = LossConfig(warm_up=0, enabled={t: t != "edc" or True for t in TERMS})

        @jax.jit
        def L(X):
            return loss_from_x(X, f, lab, jnp.zeros(P, jnp.int32), jnp.ones(P), 1, cfg,
                               ModelConfig(checkpoint_every=0))[0]

        g = jax.grad(L)(X)
        rng = np.random.default_rng(0)
        checked = 0
        for field in ("x_dalec", "x_pheno", "x_pools"):
            arr = getattr(X, field)
            for _ in range(6):
                idx = tuple(rng.integers(0, s) for s in arr.shape)
                h = 1e-5 * max(1.0, abs(float(arr[idx])))
                up = X._replace(**{field: arr.at[idx].add(h)})
                dn = X._replace(**{field: arr.at[idx].add(-h)})
                fd = (float(L(up)) - float(L(dn))) / (2 * h)
                ad = float(getattr(g, field)[idx])
                assert fd == pytest.approx(ad, rel=2e-4, abs=1e-6 * float(L(X))), (field, idx)
                checked += 1
        assert checked == 18


def test_lean_rollout_equals_full_outputs(golden_monthly):
    g = golden_monthly
    params = Parameters.from_arrays(jnp.asarray(g["dalec_params"]), jnp.asarray(g["pheno_params"]),
                                    jnp.asarray(g["initial_pools"]))
    f = Forcing.from_array(jnp.asarray(g["met"]))
    _, full = simulate(g["met"], g["dalec_params"], g["pheno_params"], g["initial_pools"])
    outs, sums = required_series(ALL_ON)
    _, series, totals = rollout(params, f, outputs=outs, sums=sums)
    for n in outs:
        ref = np.asarray(full[..., OUTPUTS.index(n)])
        # same arithmetic, different fusion: equal to float32 rounding
        np.testing.assert_allclose(np.asarray(series[n]), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    for n in sums:
        np.testing.assert_allclose(np.asarray(totals[n]), np.asarray(full[..., OUTPUTS.index(n)]).sum(1), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("k", [17])
def test_checkpointed_scan_gives_same_loss_and_gradient(golden_monthly, k):
    # 60 = 3 x 17 + 9: whole segments and a remainder
    X, f, lab = _small(golden_monthly, P=6, T=60)
    P = 6

    @partial(jax.jit, static_argnums=1)
    def L(X, m):
        return loss_from_x(X, f, lab, jnp.zeros(P, jnp.int32), jnp.ones(P), 1, ALL_ON, m)[0]

    vg = jax.jit(jax.value_and_grad(lambda X, m: L(X, m)), static_argnums=1)
    v0, g0 = vg(X, ModelConfig(checkpoint_every=0))
    v1, g1 = vg(X, ModelConfig(checkpoint_every=k))
    assert float(v0) == pytest.approx(float(v1), rel=1e-6)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6 * np.abs(np.asarray(a)).max())


def test_patches_in_one_batch_equal_separate_batches(golden_monthly):
    """A batch of several whole patches gives the sum of the per-patch losses; padding is inert."""
    g = golden_monthly
    X, f, lab = _small(g, P=12, T=36)
    patch = jnp.array([0] * 5 + [1] * 4 + [2] * 3, jnp.int32)

    @partial(jax.jit, static_argnums=5)
    def L(X, f, lab, patch, valid, n):
        return loss_from_x(X, f, lab, patch, valid, n, ALL_ON, ModelConfig())

    tot, terms = L(X, f, lab, patch, jnp.ones(12), 3)
    parts = []
    for p, sl in enumerate([slice(0, 5), slice(5, 9), slice(9, 12)]):
        sub = jax.tree.map(lambda a: a[sl], (X, f, lab))
        n = sl.stop - sl.start
        parts.append(L(*sub, jnp.zeros(n, jnp.int32), jnp.ones(n), 1)[0])
    assert float(tot) == pytest.approx(float(sum(parts)), rel=1e-5)
    # padding: two copies of pixel 0 with valid = 0 and garbage labels change nothing
    pad = jax.tree.map(lambda a: jnp.concatenate([a, a[:2]]), (X, f))
    lab_p = jax.tree.map(lambda a: jnp.concatenate([a, jnp.full_like(a[:2], 7.0)]), lab)
    tot_p, _ = L(*pad, lab_p, jnp.concatenate([patch, jnp.array([2, 2], jnp.int32)]),
                 jnp.concatenate([jnp.ones(12), jnp.zeros(2)]), 3)
    assert float(tot_p) == pytest.approx(float(tot), rel=1e-6)


def test_annual_terms_follow_steps_per_year(golden_daily):
    """Outside parity mode, annual terms use the data's steps per year (365 for daily)."""
    X, f, lab = _small(golden_daily, P=3, T=730)
    cfg12 = LossConfig(enabled={t: t == "biomass" for t in TERMS}, steps_per_year=12)
    cfg365 = LossConfig(enabled={t: t == "biomass" for t in TERMS}, steps_per_year=365)
    lab = lab.with_stream("biomass", weight=jnp.ones(lab.shape))  # biomass observed every day
    a = loss_from_x(X, f, lab, jnp.zeros(3, jnp.int32), jnp.ones(3), 1, cfg12, ModelConfig())[1]["biomass"]
    b = loss_from_x(X, f, lab, jnp.zeros(3, jnp.int32), jnp.ones(3), 1, cfg365, ModelConfig())[1]["biomass"]
    assert float(a) > 0 and float(b) > 0 and float(a) != pytest.approx(float(b), rel=1e-3)
    # 730 days = 2 years: each annual mean term is one of 2 per pixel
    assert float(b) < float(a)


def test_warm_up_excludes_steps(golden_monthly):
    X, f, lab = _small(golden_monthly, P=3, T=48)
    base = LossConfig(enabled={t: t == "sif" for t in TERMS})
    wu = LossConfig(enabled={t: t == "sif" for t in TERMS}, warm_up=24)
    # huge SIF misfit only in the warm-up
    lab2 = lab.with_stream("sif", value=lab.value["sif"].at[:, :24].add(100.0))
    args = (jnp.zeros(3, jnp.int32), jnp.ones(3), 1)
    a = loss_from_x(X, f, lab2, *args, base, ModelConfig())[0]
    b = loss_from_x(X, f, lab2, *args, wu, ModelConfig())[0]
    c = loss_from_x(X, f, lab, *args, wu, ModelConfig())[0]
    assert float(a) > 10 * float(b) and float(b) == pytest.approx(float(c), rel=1e-6)


def test_unknown_term_is_a_config_error():
    with pytest.raises(ValueError, match="loss.weights: unknown term"):
        LossConfig(weights={"lia": 3.0})


def test_pixel_blocks_give_the_same_rollout_and_gradient(golden_monthly):
    """Running pixels in cache-sized blocks (with a padded last block) changes nothing."""
    X, f, lab = _small(golden_monthly, P=10, T=36)

    @partial(jax.jit, static_argnums=1)
    def vg(X, block):
        return jax.value_and_grad(lambda X: loss_from_x(
            X, f, lab, jnp.zeros(10, jnp.int32), jnp.ones(10), 1, ALL_ON,
            ModelConfig(pixel_block=block))[0])(X)

    v0, g0 = vg(X, 0)
    v1, g1 = vg(X, 4)  # 3 blocks of 4, the last padded
    assert float(v1) == pytest.approx(float(v0), rel=1e-6)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6 * np.abs(np.asarray(a)).max())
    g = golden_monthly
    full = simulate(g["met"][:10], g["dalec_params"][:10], g["pheno_params"][:10], g["initial_pools"][:10])
    blk = simulate(g["met"][:10], g["dalec_params"][:10], g["pheno_params"][:10], g["initial_pools"][:10],
                   pixel_block=4)
    for a, b in zip(full, blk):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-6 * np.abs(np.asarray(a)).max())
