"""Member batching (issue 13): M ensemble members' loss + gradient in one vmapped call against
M separate calls of the same per-member program, same pixels, same process, interleaved.

    python benchmarks/bench_member_batch.py --members 4 --pixels 512 --months 120 --repeats 7 \\
        --out benchmarks/results/member_batch_cpu.json

Each member has its own network (seed m) and its own batch of pixels (the bench's synthetic
batch with seed m). Reported: pixel-months per second of whole calls (all members), the ratio
batched / separate, and the largest relative difference between a member's batched and separate
loss and gradient (the result must not depend on batching).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--pixels", type=int, default=512, help="pixels per member per call")
    ap.add_argument("--months", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--patch-size", type=int, default=64)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from differland_dist.selfcheck.bench import _time_interleaved, synthetic_batch
    from differland_dist.experiment.batched import member, members_value_and_grad, stack_members
    from differland_dist.loss import LossConfig, network_value_and_grad
    from differland_dist.model.config import ModelConfig
    from differland_dist.model.structures import Forcing
    from differland_dist.network import init_network

    M, P, T = a.members, a.pixels, a.months
    n_patches = -(-P // a.patch_size)
    lc, mc = LossConfig(), ModelConfig()
    per = []
    for m in range(M):
        met, labels, pred = synthetic_batch(P, T, seed=m)
        net = init_network(jax.random.PRNGKey(m), pred.shape[1] - 1)
        per.append((net, jnp.asarray(pred), Forcing.from_array(jnp.asarray(met)),
                    jax.tree.map(jnp.asarray, labels),
                    jnp.asarray(np.arange(P) // a.patch_size, jnp.int32), jnp.ones(P, jnp.float32)))
    stacked = stack_members(per)

    def separate():
        return [network_value_and_grad(*args, n_patches, lc, mc) for args in per]

    def batched():
        return members_value_and_grad(*stacked, n_patches, lc, mc)

    t0 = time.perf_counter()
    sep = jax.block_until_ready(separate())
    t_compile_sep = time.perf_counter() - t0
    t0 = time.perf_counter()
    bat = jax.block_until_ready(batched())
    t_compile_bat = time.perf_counter() - t0
    worst_loss = worst_grad = 0.0
    bitwise = True
    for m in range(M):
        (ls, _), gs = sep[m]
        (lb, _), gb = member(bat, m)
        worst_loss = max(worst_loss, abs(float(lb) - float(ls)) / max(abs(float(ls)), 1e-30))
        for x, y in zip(jax.tree.leaves(gs), jax.tree.leaves(gb)):
            x, y = np.asarray(x), np.asarray(y)
            bitwise &= bool(np.array_equal(x, y))
            worst_grad = max(worst_grad, float(np.max(np.abs(x - y)) / (np.max(np.abs(x)) + 1e-30)))
    ts, tb = _time_interleaved([separate, batched], a.repeats)
    pm = M * P * T
    dev = jax.devices()[0]
    res = {
        "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "device": f"{dev.platform}:{dev.device_kind}", "jax": jax.__version__,
        "members": M, "pixels_per_member": P, "months": T, "repeats": a.repeats,
        "separate_s_median": ts, "batched_s_median": tb,
        "separate_pixel_months_per_s": pm / ts, "batched_pixel_months_per_s": pm / tb,
        "batched_over_separate_speed": ts / tb,
        "compile_s": {"separate": t_compile_sep, "batched": t_compile_bat},
        "max_rel_diff": {"loss": worst_loss, "grad": worst_grad}, "bitwise_identical": bitwise,
    }
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
