"""Does this machine give two single-threaded JAX processes two cores' worth of work?

    python benchmarks/bench_two_cores.py --pixels 2048 --months 60 --out benchmarks/results/two_cores_cpu.json

Runs ``differland bench``'s loss+gradient kernel in one process alone, then in two processes
at the same time (each pinned to one XLA thread, as a calibration worker is), alternately
``--repeats`` times, and reports each process's rate. On a machine with two free physical
cores the two concurrent processes each keep ~1.0x the single rate; a ratio far below
means the cores (or their memory bandwidth) are shared, and no worker count can scale here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ("import json, sys; from differland_dist.selfcheck.bench import run_bench; "
        "r = run_bench(pixels=int(sys.argv[1]), months=int(sys.argv[2]), repeats=int(sys.argv[3])); "
        "print(json.dumps({'rate': r.grad_pixel_months_per_s}))")


def _env() -> dict:
    from differland_dist.common.process_env import jax_process_env

    env = dict(os.environ)
    env.update(jax_process_env("cpu", 1))
    return env


def _run(n: int, a) -> list[float]:
    procs = [subprocess.Popen([sys.executable, "-c", CODE, str(a.pixels), str(a.months), str(a.calls)],
                              stdout=subprocess.PIPE, text=True, env=_env(), cwd=ROOT) for _ in range(n)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1])["rate"] for p in procs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, default=2048)
    ap.add_argument("--months", type=int, default=60)
    ap.add_argument("--calls", type=int, default=15, help="timed calls per process")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    alone, pair = [], []
    for _ in range(a.repeats):
        alone += _run(1, a)
        pair += _run(2, a)
    res = {"pixels": a.pixels, "months": a.months, "alone_pixel_months_per_s": statistics.median(alone),
           "concurrent_pixel_months_per_s_each": statistics.median(pair),
           "ratio_each_concurrent_over_alone": statistics.median(pair) / statistics.median(alone),
           "runs": {"alone": alone, "concurrent": pair}, "cpus": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
