"""Member batching (issue 13): M members' loss and gradient in one vmapped call equal each
member's own call (same program per member; only float rounding may differ)."""

from __future__ import annotations

import numpy as np


def test_batched_members_equal_separate_members():
    import jax
    import jax.numpy as jnp

    from differland_dist.selfcheck.bench import synthetic_batch
    from differland_dist.experiment.batched import member, members_value_and_grad, stack_members
    from differland_dist.loss import LossConfig, network_value_and_grad
    from differland_dist.model.config import ModelConfig
    from differland_dist.model.structures import Forcing
    from differland_dist.network import init_network

    P, T, size = 24, 24, 8
    lc, mc = LossConfig(warm_up=0), ModelConfig()
    per = []
    for m in range(3):  # different networks and different pixels per member
        met, labels, pred = synthetic_batch(P, T, seed=10 + m)
        per.append((init_network(jax.random.PRNGKey(m), pred.shape[1] - 1), jnp.asarray(pred),
                    Forcing.from_array(jnp.asarray(met)), jax.tree.map(jnp.asarray, labels),
                    jnp.asarray(np.arange(P) // size, jnp.int32), jnp.ones(P, jnp.float32)))
    (tot, terms), grads = members_value_and_grad(*stack_members(per), P // size, lc, mc)
    assert tot.shape == (3,)
    for m, args in enumerate(per):
        (t1, terms1), g1 = network_value_and_grad(*args, P // size, lc, mc)
        np.testing.assert_allclose(float(tot[m]), float(t1), rtol=1e-6)
        for k in terms1:
            np.testing.assert_allclose(float(terms[k][m]), float(terms1[k]), rtol=1e-5, atol=1e-12, err_msg=k)
        for a, b in zip(jax.tree.leaves(member(grads, m)), jax.tree.leaves(g1)):
            a, b = np.asarray(a), np.asarray(b)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max())
    # the members really differ (the comparison is not of one member with itself)
    assert len({round(float(t), 6) for t in tot}) == 3
