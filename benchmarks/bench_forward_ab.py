"""A/B of the glibc heap tuning on ``differland bench``, alternating fresh processes.

glibc reads its settings at process start, so each measurement is a fresh
``differland bench --json`` with ``DIFFERLAND_MALLOC_TUNING`` set to 1 or 0, in turn, so that
load changes on a shared machine hit both settings alike. Prints one JSON line per run and
the medians of each setting.

    python benchmarks/bench_forward_ab.py --rounds 5 --out benchmarks/results/forward_ab_cpu.json
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pixels", type=int, default=2048)
    ap.add_argument("--months", type=int, default=276)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    rows = []
    for r in range(a.rounds):
        for tuning in ("1", "0"):
            env = dict(os.environ, DIFFERLAND_MALLOC_TUNING=tuning)
            cmd = [sys.executable, "-m", "differland_dist.cli.main", "bench", "--json", "--pixels",
                   str(a.pixels), "--months", str(a.months), "--repeats", str(a.repeats)]
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            row = json.loads(p.stdout.strip().splitlines()[-1])
            row.update(round=r, malloc_tuning=tuning == "1", date=time.strftime("%Y-%m-%d"))
            print(json.dumps(row), flush=True)
            rows.append(row)
    keys = ("forward_pixel_months_per_s", "forward_published_layout_pixel_months_per_s",
            "grad_pixel_months_per_s")
    summary = {}
    for tuned in (True, False):
        sel = [r for r in rows if r["malloc_tuning"] == tuned]
        summary["tuned" if tuned else "default"] = {k: statistics.median(r[k] for r in sel) for k in keys}
    print(json.dumps({"summary": summary}))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(json.dumps(r) for r in rows + [{"summary": summary}]) + "\n")


if __name__ == "__main__":
    main()
