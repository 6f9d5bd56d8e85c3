"""Cost of one optimizer update of the paper's size against the kernel (issue 28, item 1).

    python benchmarks/bench_update_cost.py --resolution 5 --years 23 --steps 160 --k 1 32 \\
        --out benchmarks/results/update_cost_cpu.json

One worker (one CPU, JAX on one thread) takes one call of 320 pixels per update, 276 months,
as the paper's update of one 320-pixel patch: the synthetic store's patches are small (a
5-degree grid's tiles hold at most 16 pixels), so an update draws 31 of them (~250 real
pixels, the call padded to ``--pixels-per-call`` 320 rows; the paper's 0.25-degree tiles fill
it), with ``training.updates_per_call`` = each K given. The per-update time is taken between the end
of the first call (compilation and the first reads excluded) and the end of the run, from the
driver's clock (everything: driver, Ray round trip, packing, compute). The kernel is
``differland bench``'s loss + gradient (:func:`differland_dist.selfcheck.bench.run_bench`) at the same
pixels and months in a Ray task set up like the worker, timed before and after the runs; the
ratio is the update's time over the mean of the two kernels. All in one run.
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
    ap.add_argument("--resolution", type=float, default=5.0)
    ap.add_argument("--years", type=int, default=23, help="23 years: the paper's 276 months")
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 32], help="updates per call")
    ap.add_argument("--patches-per-step", type=int, default=31)
    ap.add_argument("--pixels-per-call", type=int, default=320)
    ap.add_argument("--store", help="an existing store (else a synthetic one, removed at exit)")
    ap.add_argument("--gpu", action="store_true", help="the worker and the kernel on one GPU each")
    ap.add_argument("--updates-per-member", type=int, default=193_000,
                    help="the paper's protocol: 199 epochs of ~970 patches (for the projection)")
    ap.add_argument("--members", type=int, default=140)
    ap.add_argument("--devices", type=int, default=16)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the driver; workers get theirs from the config
    import ray

    from differland_dist.config import load_config
    from differland_dist.data.store import open_store
    from differland_dist.distributed.trainer import calibrate
    from differland_dist.distributed.worker import worker_env
    from differland_dist.synthetic import synth_to_store

    scratch = tempfile.TemporaryDirectory(prefix="bench-update-")  # removed at exit
    tmp = Path(scratch.name)
    store = a.store
    if store is None:
        store = str(tmp / "earth.zarr")
        t0 = time.perf_counter()
        synth_to_store(store, resolution=a.resolution, years=a.years, seed=0)
        print(json.dumps({"synth_s": time.perf_counter() - t0}), flush=True)
    s = open_store(store)
    rows_ = a.pixels_per_call  # checked against the runs' compiled call below
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    hw = ["ray.gpus_per_worker=1"] if a.gpu else ["ray.jax_threads_per_worker=1"]
    wcfg = load_config(None, ["ray.cpus_per_worker=1", *hw])

    @ray.remote(num_cpus=1, num_gpus=1 if a.gpu else 0, runtime_env={"env_vars": worker_env(wcfg.ray)})
    def kernel_task(pixels, months):
        from differland_dist.selfcheck.bench import as_dict, run_bench

        return as_dict(run_bench(pixels=pixels, months=months, repeats=9))

    def kernel():
        r = ray.get(kernel_task.remote(rows_, s.n_time))
        row = {"kernel": "differland bench loss+gradient, one core", "pixels": rows_,
               "months": s.n_time, "grad_s_median": r["grad_s_median"]}
        print(json.dumps(row), flush=True)
        return row

    kernels = [kernel()]
    runs = []
    for k in a.k:
        cfg = load_config(None, [f"data.url={store}", f"training.steps={a.steps}",
                                 f"training.patches_per_step={a.patches_per_step}",
                                 f"training.pixels_per_call={a.pixels_per_call}",
                                 "training.eval_every=0", "training.checkpoint_every=0",
                                 f"training.updates_per_call={k}", "ray.workers=1",
                                 "ray.cpus_per_worker=1", *hw])
        marks: list[tuple[int, float]] = []
        hook = lambda step, cal: marks.append((step, time.perf_counter()))  # noqa: E731
        t0 = time.perf_counter()
        state, cal = calibrate(cfg, str(tmp / f"k{k}"), hooks=[hook])
        wall = time.perf_counter() - t0
        # from the end of the first call to the end of the last call of K updates (a shorter
        # last call compiles a program of its own length: a one-time cost, not an update's)
        full = [m for m in marks if m[0] % k == 0]
        (s0, t_first), (s1, t_last) = full[0], full[-1]
        train = [m for m in cal.metrics if m["split"] == "train"]
        row = {"updates_per_call": k, "steps": a.steps, "steps_timed": s1 - s0,
               "update_s": (t_last - t_first) / (s1 - s0), "wall_s": wall,
               "worker_compute_s_per_update": statistics.median(m["time_compute_s"] for m in train[s0:]),
               "rows_per_call": cal.shape.rows, "months": s.n_time,
               "calls_per_update_mean": statistics.mean(m["calls"] for m in train),
               "pixels_per_update_mean": statistics.mean(m["pixel_months"] for m in train) / s.n_time}
        print(json.dumps(row), flush=True)
        runs.append(row)
        if cal.shape.rows != rows_:
            raise SystemExit(f"the call has {cal.shape.rows} rows, not {rows_}: choose "
                             "--patches-per-step so that a step fits one call")
    kernels.append(kernel())
    k_s = statistics.mean(x["grad_s_median"] for x in kernels)
    for r in runs:
        r["kernel_s"] = k_s
        r["update_vs_kernel"] = r["update_s"] / k_s
    best = min(runs, key=lambda r: r["update_s"])
    member_h = a.updates_per_member * best["update_s"] / 3600
    waves = -(-a.members // a.devices)
    summary = {"rows_per_call": rows_, "months": s.n_time, "kernel_s": k_s,
               "worker_share_of_kernel_k1": round(k_s / runs[0]["update_s"], 3),
               "updates_per_s": {r["updates_per_call"]: round(1 / r["update_s"], 2) for r in runs},
               "projection": {"updates_per_member": a.updates_per_member, "member_h": round(member_h, 2),
                              "members": a.members, "devices": a.devices, "members_per_device": 1,
                              "waves": waves, "grid_h": round(waves * member_h, 1),
                              "grid_h_one_device": round(a.members * member_h, 1),
                              "updates_per_call": best["updates_per_call"]},
               "device": "gpu" if a.gpu else "cpu",
               **{f"update_vs_kernel_k{r['updates_per_call']}": round(r["update_vs_kernel"], 3) for r in runs},
               "store_pixels": s.n_pixels, "patches": len(s.patch_slices),
               "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
               "load_avg_1m": os.getloadavg()[0]}
    print(json.dumps(summary), flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(json.dumps(r) for r in [*kernels, *runs, summary]) + "\n")
    ray.shutdown()


if __name__ == "__main__":
    main()
