"""Benchmark of batch inference (issue 5): pixel-months per second end to end, by actor count.

    python benchmarks/bench_inference.py --resolution 1 --years 23 --actors 1 2 --cpus 2 \\
        --out benchmarks/results/inference_cpu.json

Makes (or reuses, in --workdir) a synthetic store and an untrained checkpoint, then for each
actor count runs ``run_inference`` into a fresh output store (Ray Data, actor pool of exactly
that size, one CPU per actor) and reports:

* end-to-end pixel-months/s: all pixel-months / wall time of the whole call (driver checks,
  output creation, actor start-up and compilation, read + compute + write of every task,
  gridded maps and the ``complete`` flag);
* steady pixel-months/s: pixel-months / time from the first to the last task record (actors
  warm);
* the fraction of the actors' busy time spent reading, computing, writing and starting up
  (loading the network and compiling).

One JSON line per run on stdout and in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # random_checkpoint, a test fixture
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=float, default=1.0)
    ap.add_argument("--years", type=int, default=23)
    ap.add_argument("--max-patch-size", type=int, default=320)
    ap.add_argument("--pixels-per-task", type=int, default=2048)
    ap.add_argument("--chunk-pixels", type=int, default=2048, help="target output chunk")
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs given to Ray")
    ap.add_argument("--workdir", default="/tmp/differland_bench_inference")
    ap.add_argument("--out")
    a = ap.parse_args(argv)

    import ray

    from differland_dist.data import schema
    from differland_dist.data.store import PixelStore, write_store
    from differland_dist.synthetic import make_synthetic
    from random_checkpoint import random_checkpoint
    from differland_dist.inference.pipeline import InferenceOptions, run_inference

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    store = str(work / f"store_{a.resolution:g}deg_{a.years}y_{a.max_patch_size}.zarr")
    if not (Path(store) / "zarr.json").exists():
        t = time.perf_counter()
        ds = make_synthetic(resolution=a.resolution, years=a.years, max_patch_size=a.max_patch_size)
        # The synthetic LAI observations can exceed the schema's range (15) on long or fine
        # grids, which write_store refuses; inference reads no observations, so clip them.
        for st in schema.STREAMS:
            v = schema.obs_value_name(st.default_product)
            if v in ds:
                ds[v] = ds[v].clip(st.lo, st.hi)
        write_store(ds, store, overwrite=True)
        print(f"# store {store} made in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    ckpt = random_checkpoint(store, str(work / "network.npz"))
    st = PixelStore(store)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False)
    env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "ray_cpus": a.cpus, "date": time.strftime("%Y-%m-%d")}
    rows = []
    try:
        for n in a.actors:
            out = work / f"out_{n}actors.zarr"
            shutil.rmtree(out, ignore_errors=True)
            opts = InferenceOptions(min_actors=n, max_actors=n, cpus_per_actor=1.0,
                                    pixels_per_task=a.pixels_per_task, chunk_pixels=a.chunk_pixels)
            r = run_inference(ckpt, str(out), store, options=opts)
            done = sorted(t["finished_at"] for t in r.tasks)
            px_months = r.pixels_computed * r.n_time
            first_task = [t for t in r.tasks if t["finished_at"] == done[0]][0]
            steady_s = done[-1] - done[0]
            steady_px = (r.pixels_computed - first_task["pixels"]) * r.n_time
            row = {
                "actors": n, "pixels": r.n_pixels, "months": r.n_time, "tasks": len(r.tasks),
                "pixels_per_task": a.pixels_per_task, "store_chunk_pixels": st.max_patch_size,
                "output_chunk_pixels": int(PixelStore(str(out)).attrs["chunk_pixels"]),
                "end_to_end_pixel_months_per_s": px_months / r.wall_s,
                "steady_pixel_months_per_s": steady_px / steady_s if steady_s > 0 else None,
                "wall_s": r.wall_s, "setup_s": r.setup_s, "run_s": r.run_s, "finish_s": r.finish_s,
                "actor_time_fractions": r.time_fractions(),
                "actor_seconds": {k: sum(t[f"{k}_s"] for t in r.tasks)
                                  for k in ("read", "compute", "write", "init")},
                "actors_used": len({t["actor"] for t in r.tasks}), **env,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        ray.shutdown()
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
