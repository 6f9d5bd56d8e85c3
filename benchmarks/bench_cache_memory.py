"""A worker's resident memory with a store 4x its patch cache, against a cache that holds it all.

    python benchmarks/bench_cache_memory.py --resolution 1.0 --years 23 --out benchmarks/results/cache_memory_cpu.json

One synthetic store; the same calibration (one worker, one core) twice: first with a cache
that holds every train patch (its final size is the decoded bytes of the train patches), then
with ``data.cache_bytes`` a quarter of that. Every step a hook
asks the worker for its resident memory (``/proc/self/status`` VmRSS, VmHWM) and cache
counters; a run covers ``--epochs`` epochs, so the bounded cache evicts and re-reads patches.
The bounded worker's RSS must stay flat after the first steps while the unbounded one grows
with the store.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=float, default=1.0)
    ap.add_argument("--years", type=int, default=23)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--patches-per-step", type=int, default=64)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import ray

    from differland_dist.config import load_config
    from differland_dist.data.store import open_store
    from differland_dist.synthetic import synth_to_store
    from differland_dist.distributed.trainer import calibrate

    scratch = tempfile.TemporaryDirectory(prefix="bench-cache-")  # removed at exit: stores are GBs
    tmp = Path(scratch.name)
    store = str(tmp / "earth.zarr")
    t0 = time.perf_counter()
    synth_to_store(store, resolution=a.resolution, years=a.years, seed=0)
    synth_s = time.perf_counter() - t0
    s = open_store(store)
    train = [int(p) for p in s.train_patches]
    base = [f"data.url={store}", "training.eval_every=0", "ray.workers=1", "ray.cpus_per_worker=1",
            "ray.jax_threads_per_worker=1", f"training.patches_per_step={a.patches_per_step}"]
    steps = a.epochs * max(1, len(train) // a.patches_per_step)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    decoded = None
    for label in ("cache holds the store", "store 4x the cache"):
        cache = 1 << 40 if decoded is None else decoded // 4
        cfg = load_config(None, base + [f"data.cache_bytes={cache}", f"training.steps={steps}",
                                        f"training.checkpoint_every={steps}"])
        trace = []

        def hook(step, cal):
            (i,) = cal.worker_info()
            trace.append({"step": step, "rss_mb": i["rss_bytes"] / 2**20,
                          "cache_mb": i["cache"]["bytes"] / 2**20, "loaded": i["cache"]["loaded"],
                          "evicted": i["cache"]["evicted"]})

        t0 = time.perf_counter()
        calibrate(cfg, str(tmp / f"run-{len(rows)}"), hooks=[hook])
        wall = time.perf_counter() - t0
        if decoded is None:
            decoded = int(max(t["cache_mb"] for t in trace) * 2**20)
        after_first_epoch = [t["rss_mb"] for t in trace if t["step"] > steps // a.epochs]
        row = {"case": label, "cache_bytes": cache, "decoded_train_bytes": decoded, "steps": steps,
               "epochs": a.epochs, "wall_s": round(wall, 1),
               "rss_mb_first_step": round(trace[0]["rss_mb"], 1),
               "rss_mb_end_of_epoch_1": round(trace[steps // a.epochs - 1]["rss_mb"], 1),
               "rss_mb_max": round(max(t["rss_mb"] for t in trace), 1),
               "rss_mb_range_after_epoch_1": round(max(after_first_epoch) - min(after_first_epoch), 1)
               if after_first_epoch else None,
               "cache_mb_max": round(max(t["cache_mb"] for t in trace), 1),
               "patches_loaded": trace[-1]["loaded"], "patches_evicted": trace[-1]["evicted"],
               "trace": [{k: round(v, 1) if isinstance(v, float) else v for k, v in t.items()} for t in trace]}
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)
        rows.append(row)
    ray.shutdown()
    out = {"store": {"resolution": a.resolution, "pixels": s.n_pixels, "months": s.n_time,
                     "train_patches": len(train), "synth_s": round(synth_s, 1)},
           "runs": rows, "date": time.strftime("%Y-%m-%d"),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
