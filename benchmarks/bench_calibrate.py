"""Calibration step timing (issue 4): compute vs Ray communication vs driver, and scaling
from 1 to 2 workers with one core each (JAX pinned to one thread per worker).

    python benchmarks/bench_calibrate.py --resolution 2.5 --years 5 --steps 40 --out benchmarks/results/calibrate_cpu.json

Both worker counts run in this one process against the same store, so their ratio is
comparable; the first steps (compilation) are excluded from the medians.

``--kernel`` also runs ``differland bench``'s loss+gradient kernel (:func:`differland_dist.selfcheck.bench.
run_bench`) in a Ray task set up exactly like a worker (one CPU, JAX on one thread), on one
call's padded pixels and the store's months, before and after the calibrations, and reports
each calibration's pixel-months per second per core against the kernel's per core.
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
    ap.add_argument("--resolution", type=float, default=2.5)
    ap.add_argument("--years", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", type=int, default=5, help="first steps excluded (compilation)")
    ap.add_argument("--patches-per-step", type=int, default=16)
    ap.add_argument("--patches-per-call", type=int, default=8,
                    help="patches per call (the layout without packing: each patch padded)")
    ap.add_argument("--pixels-per-call", type=int, default=None,
                    help="pack patches into calls of this many pixels instead (wins)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--kernel", action="store_true", help="also time the bench kernel per core")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run every worker count this many times, the kernel between rounds; "
                         "each run is compared with the kernels timed just before and after it")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import ray

    from differland_dist.config import load_config
    from differland_dist.data.store import open_store
    from differland_dist.synthetic import synth_to_store
    from differland_dist.distributed.trainer import calibrate

    scratch = tempfile.TemporaryDirectory(prefix="bench-cal-")  # removed at exit: stores are GBs
    tmp = Path(scratch.name)
    store = str(tmp / "earth.zarr")
    synth_to_store(store, resolution=a.resolution, years=a.years, seed=0)
    s = open_store(store)
    ray.init(num_cpus=max(a.workers), include_dashboard=False, log_to_driver=False)
    rows = []

    def kernel():
        from differland_dist.distributed.worker import worker_env

        cfg = load_config(None, ["ray.cpus_per_worker=1", "ray.jax_threads_per_worker=1"])

        @ray.remote(num_cpus=1, runtime_env={"env_vars": worker_env(cfg.ray)})
        def run(pixels, months):
            from differland_dist.selfcheck.bench import as_dict, run_bench

            return as_dict(run_bench(pixels=pixels, months=months, repeats=7))

        pixels = a.pixels_per_call or a.patches_per_call * int(s.attrs["max_patch_size"])  # a call's rows
        r = ray.get(run.remote(pixels, s.n_time))
        row = {"kernel": "differland bench loss+gradient, one core", "pixels": pixels,
               "months": s.n_time, "grad_pixel_months_per_s": r["grad_pixel_months_per_s"],
               "grad_s_median": r["grad_s_median"]}
        print(json.dumps(row), flush=True)
        return row

    kernels = [kernel()] if a.kernel else []
    for rep, W in [(r, W) for r in range(a.repeats) for W in a.workers]:
        if a.kernel and rep > 0 and W == a.workers[0]:
            kernels.append(kernel())
        cfg = load_config(None, [f"data.url={store}", f"training.steps={a.steps}",
                                 f"training.patches_per_step={a.patches_per_step}",
                                 *([f"training.pixels_per_call={a.pixels_per_call}"] if a.pixels_per_call
                                   else [f"training.patches_per_call={a.patches_per_call}"]),
                                 "training.eval_every=0", f"training.checkpoint_every={a.steps}",
                                 f"ray.workers={W}", "ray.cpus_per_worker=1", "ray.jax_threads_per_worker=1"])
        t0 = time.perf_counter()
        state, cal = calibrate(cfg, str(tmp / f"run{W}_{rep}"))
        wall = time.perf_counter() - t0
        m = [x for x in cal.metrics if x["split"] == "train"][a.skip:]
        med = lambda k: statistics.median(x[k] for x in m)  # noqa: E731
        n_params = state.flat.size
        row = {
            "workers": W, "repeat": rep, "rows_per_call": cal.shape.rows, "pixels": s.n_pixels, "months": s.n_time, "steps_timed": len(m),
            "pixel_months_per_step": med("pixel_months"),
            "step_s": med("time_step_s"), "compute_s": med("time_compute_s"),
            "comm_s": med("time_comm_s"), "driver_s": med("time_driver_s"),
            "pixel_months_per_s": med("pixel_months_per_s"), "wall_s": wall,
            "calls_per_step": med("calls"), "pixels_per_call": a.pixels_per_call,
            "patches_per_call": None if a.pixels_per_call else a.patches_per_call,
            "n_params": n_params,
            "bytes_broadcast_per_worker": n_params * 4,
            "bytes_returned_per_step": a.patches_per_step * n_params * 4,
            "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.kernel:
        kernels.append(kernel())
        for r in rows:  # the kernels timed just before and after this run's round
            k = statistics.mean(x["grad_pixel_months_per_s"] for x in kernels[r["repeat"]:r["repeat"] + 2])
            r["kernel_grad_pixel_months_per_s_per_core"] = k
            r["per_core_vs_kernel"] = r["pixel_months_per_s"] / r["workers"] / k
            print(json.dumps({"workers": r["workers"], "repeat": r["repeat"],
                              "per_core_vs_kernel": r["per_core_vs_kernel"]}))
        for W in a.workers:
            v = [r["per_core_vs_kernel"] for r in rows if r["workers"] == W]
            print(json.dumps({"workers": W, "per_core_vs_kernel_median": statistics.median(v),
                              "runs": len(v)}))
    if len(rows) >= 2:
        print(json.dumps({"speedup_step": rows[0]["step_s"] / rows[-1]["step_s"],
                          "speedup_compute": rows[0]["compute_s"] / rows[-1]["compute_s"]}))
    rows.extend(kernels)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ray.shutdown()


if __name__ == "__main__":
    main()
