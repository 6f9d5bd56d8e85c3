"""Benchmark of the DALEC core (issue 2): throughput vs batch size, and gradient memory vs months.

    python benchmarks/bench_core.py --pixels 320 2048 --months 276 --out benchmarks/results/core_cpu.json
    python benchmarks/bench_core.py --cpu-devices 1 ...   # one core only

Prints one JSON line per configuration and writes them all to --out. Medians of --repeats
timed calls after compilation, all in this one process (ratios are comparable).
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
    ap.add_argument("--pixels", type=int, nargs="+", default=[320, 2048])
    ap.add_argument("--months", type=int, nargs="+", default=[276])
    ap.add_argument("--memory-months", type=int, nargs="*", default=[],
                    help="also compile the gradient at these lengths, with and without checkpointing")
    ap.add_argument("--memory-pixels", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--unroll", type=int, default=1)
    ap.add_argument("--cpu-devices", type=int, default=os.cpu_count(),
                    help="host devices on a CPU (pixels are split across them)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={a.cpu_devices}").strip()

    from differland_dist.common import allocator

    tuned = allocator.tune()  # as the differland CLI does
    import jax

    from differland_dist.selfcheck.bench import as_dict, run_bench

    rows = []
    env = {"python": platform.python_version(), "jax": jax.__version__, "machine": platform.machine(),
           "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "malloc_tuned": tuned}
    for T in a.months:
        for P in a.pixels:
            r = as_dict(run_bench(P, T, a.repeats, unroll=a.unroll))
            r.update(kind="throughput", **env)
            print(json.dumps(r), flush=True)
            rows.append(r)
    for T in a.memory_months:
        for ck in (0, -1):
            r = as_dict(run_bench(a.memory_pixels, T, 2, checkpoint_every=ck, unroll=a.unroll))
            r.update(kind="memory", checkpoint_every=ck, **env)
            print(json.dumps(r), flush=True)
            rows.append(r)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
