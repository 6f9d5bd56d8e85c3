"""Where batched members' gradients part from separate members' (issue 13; docs/experiments.md).

    P=24 T=24 python benchmarks/member_batch_bits.py

Three members (own network, own pixels) are computed three ways and compared bit for bit
with each member's own call (`network_value_and_grad`): everything vmapped over members
(`experiment.batched.members_value_and_grad`); the networks applied per member in a Python
loop with only the rollout and loss vmapped; and the same with each network's backward pass
as its own vjp. Prints, per way, how many gradient elements differ, the largest difference
relative to the gradient's largest element, and whether each member's loss is identical.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from differland_dist.selfcheck.bench import synthetic_batch  # noqa: E402
from differland_dist.experiment.batched import member, members_value_and_grad, stack_members  # noqa: E402
from differland_dist.loss import LossConfig, network_value_and_grad  # noqa: E402
from differland_dist.loss.objective import loss_from_x  # noqa: E402
from differland_dist.model.config import ModelConfig  # noqa: E402
from differland_dist.model.structures import Forcing  # noqa: E402
from differland_dist.network import init_network  # noqa: E402
from differland_dist.network.mlp import apply_network  # noqa: E402


def main():
    P, T, size = int(os.environ.get("P", 24)), int(os.environ.get("T", 24)), 8
    lc, mc = LossConfig(warm_up=0), ModelConfig()
    per = []
    for m in range(3):
        met, labels, pred = synthetic_batch(P, T, seed=10 + m)
        per.append((init_network(jax.random.PRNGKey(m), pred.shape[1] - 1), jnp.asarray(pred),
                    Forcing.from_array(jnp.asarray(met)), jax.tree.map(jnp.asarray, labels),
                    jnp.asarray(np.arange(P) // size, jnp.int32), jnp.ones(P, jnp.float32)))
    sep = [network_value_and_grad(*a, P // size, lc, mc) for a in per]
    nets, preds, forcs, labs, pats, vals = (list(x) for x in zip(*per))

    def compare(name, grad_of, total):
        n_diff, worst = 0, 0.0
        for m in range(3):
            for a, b in zip(jax.tree.leaves(grad_of(m)), jax.tree.leaves(sep[m][1])):
                a, b = np.asarray(a), np.asarray(b)
                n_diff += int((a != b).sum())
                worst = max(worst, float(np.max(np.abs(a - b)) / (np.abs(b).max() + 1e-30)))
        same_loss = [float(total[m]) == float(sep[m][0][0]) for m in range(3)]
        print(f"{name}: {n_diff} gradient elements differ, max relative {worst:.3g}, "
              f"loss identical {same_loss}")

    (tot, _), grads = members_value_and_grad(*stack_members(per), P // size, lc, mc)
    compare("all vmapped", lambda m: member(grads, m), tot)

    def rollout_loss(x, F, L, pa, va):
        return loss_from_x(x, F, L, pa, va, P // size, lc, mc)

    @jax.jit
    def loop_networks(nets):
        def f(nets):
            X = stack_members([apply_network(n, p) for n, p in zip(nets, preds)])
            tot, _ = jax.vmap(rollout_loss)(X, stack_members(forcs), stack_members(labs),
                                           jnp.stack(pats), jnp.stack(vals))
            return jnp.sum(tot), tot
        (_, tot), g = jax.value_and_grad(f, has_aux=True)(nets)
        return tot, g

    tot_b, g_b = loop_networks(nets)
    compare("networks looped, rollout vmapped", lambda m: g_b[m], tot_b)

    @jax.jit
    def vjp_networks(nets):
        xs, vjps = zip(*[jax.vjp(lambda n, p=p: apply_network(n, p), n) for n, p in zip(nets, preds)])
        (tot, _), gx = jax.vmap(jax.value_and_grad(rollout_loss, has_aux=True))(
            stack_members(list(xs)), stack_members(forcs), stack_members(labs), jnp.stack(pats),
            jnp.stack(vals))
        return tot, [vjps[m](member(gx, m))[0] for m in range(len(xs))]

    tot_c, g_c = vjp_networks(nets)
    compare("networks' own vjp, rollout vmapped", lambda m: g_c[m], tot_c)


if __name__ == "__main__":
    main()
