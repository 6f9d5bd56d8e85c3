"""Experiment packing (issue 13): a grid of single-worker members run concurrently on this
machine's cores, against the same members one after another, in one process and one store.

    python benchmarks/bench_experiment.py --resolution 10 --years 4 --members 4 --steps 60 \\
        --out benchmarks/results/experiment_cpu.json

"Concurrent": each member reserves 1 CPU, so a 2-core machine runs two at once. "Sequential":
each member reserves every CPU of the cluster, so the placement groups admit one at a time.
Everything else (store, configs, JAX threads per worker = 1) is the same, and the networks of
the two runs are compared bit for bit. Training only (no ensemble).
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
from differland_dist.storage.location import Location

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=float, default=10)
    ap.add_argument("--years", type=int, default=4)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--patches-per-step", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs of each mode")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import numpy as np

    from differland_dist.storage import checkpoint
    from differland_dist.synthetic import synth_to_store
    from differland_dist.experiment import grid_from_dict, run_experiment

    scratch = tempfile.TemporaryDirectory(prefix="bench-exp-")  # removed at exit: stores are GBs
    tmp = Path(scratch.name)
    store = str(tmp / "earth.zarr")
    synth_to_store(store, resolution=a.resolution, years=a.years, seed=0)
    ncpu = os.cpu_count() or 1

    def grid(cpus: float):
        return grid_from_dict({
            "name": "bench", "base": str(ROOT / "configs" / "demo.yaml"),
            "set": [f"data.url={store}", f"training.steps={a.steps}", f"training.patches_per_step={a.patches_per_step}",
                    f"training.eval_every={a.steps}", f"training.checkpoint_every={a.steps}",
                    "optimizer.warmup_steps=5", "ray.jax_threads_per_worker=1"],
            "predictor_sets": [["PFT", "CLIM", "SOIL", "AGE"]], "members": a.members,
            "keep_best": 1, "resources": {"workers": 1, "cpus_per_worker": cpus}})

    rows = []
    for rep in range(a.repeats):
        for mode, cpus in (("concurrent", 1.0), ("sequential", float(ncpu))):
            out = str(tmp / f"{mode}{rep}")
            t0 = time.perf_counter()
            run_experiment(grid(cpus), out, ensemble=False, progress_every_s=60)
            wall = time.perf_counter() - t0
            rows.append({"mode": mode, "repeat": rep, "wall_s": wall, "out": out})  # scratch, gone after the run
            print(f"{mode}: {a.members} members in {wall:.1f} s", flush=True)
    conc = [r["wall_s"] for r in rows if r["mode"] == "concurrent"]
    seq = [r["wall_s"] for r in rows if r["mode"] == "sequential"]
    same = True
    for m in range(a.members):
        x, _ = checkpoint.load(Location(str(Path(rows[0]["out"]) / "members" / "PFT+CLIM+SOIL+AGE" / f"m{m:03d}" / "network.npz")))
        y, _ = checkpoint.load(Location(str(Path(rows[1]["out"]) / "members" / "PFT+CLIM+SOIL+AGE" / f"m{m:03d}" / "network.npz")))
        same &= all(np.array_equal(x[k], y[k]) for k in x)
    res = {"machine": f"{platform.machine()} {ncpu} cores", "date": time.strftime("%Y-%m-%d"),
           "resolution": a.resolution, "years": a.years, "members": a.members, "steps": a.steps,
           "patches_per_step": a.patches_per_step,
           "runs": rows, "concurrent_s_median": float(np.median(conc)),
           "sequential_s_median": float(np.median(seq)),
           "ratio_concurrent_over_sequential": float(np.median(conc) / np.median(seq)),
           "identical_networks": bool(same)}
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
