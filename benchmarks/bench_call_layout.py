"""What a calibration call costs beyond `differland bench`'s kernel, part by part (issue 15).

    python benchmarks/bench_call_layout.py --resolution 1 --years 5 --pixels-per-call 2048 \
        --out benchmarks/results/call_layout_cpu.json

One process, JAX on one thread (as a worker with one core), one synthetic store. A worker's
`Shard` packs real calls; then, interleaved (so load changes on a shared machine affect all
alike), the median seconds of:

- ``call_field_major``: the shard's compiled call on forcing fields (F, R, T) and label leaves
  (L, R, T), as the worker runs it;
- ``call_pixel_major``: the same loss and gradient with forcing (R, T, 17) and labels
  stacked (R, T, L), the layout before 2026-11-30 (each field a strided slice);
- ``kernel``: `differland bench`'s loss+gradient on as many pixels;
- ``pack``: packing one call into the shard's reusable aligned buffers;
- ``to_device_copy`` / ``to_device_aligned``: `jnp.asarray` of unaligned packed arrays (a
  copy) against `jax.device_put` of the aligned buffers (no copy on the CPU);
- ``compute``: `Shard.compute` of the calls, per call (pack, transfer, call, results).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=float, default=1.0)
    ap.add_argument("--years", type=int, default=5)
    ap.add_argument("--pixels-per-call", type=int, default=2048)
    ap.add_argument("--calls", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--store", help="an existing store (default: synthesise one)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from differland_dist.common.process_env import jax_process_env

    os.environ.update({k: v for k, v in jax_process_env("cpu", 1).items() if k == "XLA_FLAGS"})
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.flatten_util import ravel_pytree

    from differland_dist.selfcheck.bench import run_bench
    from differland_dist.config import load_config
    from differland_dist.distributed.policy import calls as pack_calls
    from differland_dist.distributed.shard import Shard
    from differland_dist.loss.objective import network_loss
    from differland_dist.model.structures import Forcing
    from differland_dist.network import init_network
    from differland_dist.synthetic import synth_to_store

    store = a.store
    if store is None:
        scratch = tempfile.TemporaryDirectory(prefix="bench-layout-")  # removed at exit
        store = str(Path(scratch.name) / "earth.zarr")
        synth_to_store(store, resolution=a.resolution, years=a.years, seed=0)
    cfg = load_config(None, [f"data.url={store}", f"training.pixels_per_call={a.pixels_per_call}",
                             "training.patches_per_step=100000"])
    sh = Shard(cfg)
    sizes = {p: sh.patch_pixels(p) for p in sh.store.patch_slices}
    order = list(np.random.default_rng(0).permutation(sorted(sizes)))
    calls = [c for c in pack_calls(order, sizes, sh.shape.rows)][: a.calls]
    n_pred = int(sh.cache.get(calls[0][:1])[0].predictors_raw.shape[1])
    net = init_network(jax.random.PRNGKey(0), n_pred - 1, cfg.network)
    mean, std = np.zeros(n_pred, np.float32), np.ones(n_pred, np.float32)
    sh.compute(net, calls, mean, std)  # reads every patch, compiles
    fn = sh.compiled(True)  # the worker's own compiled call, timed alone
    layout, seg, rows = sh.label_layout, sh.shape.segments, sh.shape.rows
    m, s, flag = jnp.asarray(mean), jnp.asarray(std), jnp.asarray(False)
    packed = [list(sh.pack(c)) for c in calls]  # new aligned arrays, one set per call
    field = [[jax.device_put(x) for x in p] for p in packed]
    # the former layout: forcing (R, T, 17 columns) and labels (R, T, L)
    pixel = [[p[0], np.ascontiguousarray(np.moveaxis(p[1], 0, -1)),
              np.ascontiguousarray(np.moveaxis(p[2], 0, -1)), p[3], p[4]] for p in packed]
    pixel = [[jax.device_put(x) for x in p] for p in pixel]
    lc, mc, act, prow = sh.loss_cfg, cfg.model, cfg.network.activation, sh.shape.patch_rows

    def per_call_pixel_major(net, pred, forcing, stack, patch, valid, mean, std, test):
        x = (pred - mean) / std
        labels = jax.tree_util.tree_unflatten(
            layout.treedef, [stack[..., i] for i in range(stack.shape[-1])]).time_split(test)
        return network_loss(net, x, Forcing.from_array(forcing), labels, patch, valid, seg, lc,
                            mc, act, prow)

    def old_flat(*args):
        value, grads = jax.value_and_grad(per_call_pixel_major, has_aux=True)(*args)
        return value, ravel_pytree(grads)[0]

    old = jax.jit(old_flat)
    same = all(np.array_equal(u, v) for u, v in zip(
        jax.tree.leaves(jax.device_get(old(net, *pixel[0], m, s, flag))),
        jax.tree.leaves(jax.device_get(fn(net, *field[0], m, s, flag)))))
    unaligned = []
    for p in packed:  # the same arrays one float off a 64-byte boundary (fresh np.empty's usual 16)
        row = []
        for x in p:
            raw = np.empty(x.nbytes + 64, np.uint8)
            off = (16 - raw.ctypes.data) % 64
            y = raw[off:off + x.nbytes].view(x.dtype).reshape(x.shape)
            y[...] = x
            row.append(y)
        unaligned.append(row)
    n_calls = len(calls)

    def each(f):
        return lambda: [f(i) for i in range(n_calls)]

    parts = {
        "call_field_major": each(lambda i: jax.block_until_ready(fn(net, *field[i], m, s, flag))),
        "call_pixel_major": each(lambda i: jax.block_until_ready(old(net, *pixel[i], m, s, flag))),
        "pack": each(lambda i: sh.pack(calls[i], slot=i % 2)),
        "to_device_copy": each(lambda i: jax.block_until_ready([jnp.asarray(x) for x in unaligned[i]])),
        "to_device_aligned": each(lambda i: jax.block_until_ready([jax.device_put(x) for x in packed[i]])),
        "compute": lambda: sh.compute(net, calls, mean, std),
    }
    times = {k: [] for k in parts}
    for _ in range(a.repeats):
        for k, f in parts.items():
            t0 = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t0) / n_calls)
    med = {k: statistics.median(v) for k, v in times.items()}
    k = run_bench(pixels=rows, months=sh.store.n_time, repeats=a.repeats)
    pixels = [sum(sizes[p] for p in c) for c in calls]
    row = {"store": store, "rows": rows, "segments": seg, "months": int(sh.store.n_time),
           "calls": n_calls, "mean_real_pixels": float(np.mean(pixels)),
           "same_bits_both_layouts": bool(same), "kernel_s": k.grad_s_median,
           **{f"{k}_s": v for k, v in med.items()},
           "pixel_major_over_field_major": med["call_pixel_major"] / med["call_field_major"],
           "compute_vs_kernel": k.grad_s_median / med["compute"],
           "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    print(json.dumps(row, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
