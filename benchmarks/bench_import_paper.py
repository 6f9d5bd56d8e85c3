"""Import time and peak memory of the paper's driver at full size (0.25 degree, 276 months).

    python benchmarks/bench_import_paper.py --work /tmp/paper_bench \
        --out benchmarks/results/import_paper_cpu.json

Generates the driver set (benchmarks/gen_paper_driver.py --all-land, unless --work already
holds it), then runs ``differland import-netcdf`` under ``/usr/bin/time -v`` in a fresh process
and records its wall time, peak resident memory (max RSS, which counts the touched pages of the
staging memory maps too) and the store's size. ``--months`` and ``--box`` make smaller runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="directory for the driver files, store and scratch")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--months", type=int, default=276)
    p.add_argument("--box", action="store_true", help="only the test's European box (small)")
    p.add_argument("--keep", action="store_true", help="keep the store afterwards")
    p.add_argument("--zlib", action="store_true", help="compress the generated netCDF (slower to make)")
    args = p.parse_args(argv)
    work = Path(args.work)
    data = work / "driver"
    gen = None
    if not (data / "predictor_std_df_v6.csv").exists():
        t0 = time.perf_counter()
        cmd = [sys.executable, str(ROOT / "benchmarks" / "gen_paper_driver.py"), "--out", str(data),
               "--months", str(args.months)] + ([] if args.box else ["--all-land"]) + (
                   [] if args.zlib else ["--no-zlib"])
        gen = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        gen["wall_s"] = round(time.perf_counter() - t0, 1)
    store = work / "paper.zarr"
    if store.exists():
        shutil.rmtree(store)
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "differland_dist.cli.main", "import-netcdf",
           "--data-dir", str(data), "--out", str(store), "--scratch", str(work / "scratch")]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        print(res.stdout[-3000:], res.stderr[-3000:], file=sys.stderr)
        return 1
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    elapsed = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", res.stderr).group(1)
    summary = res.stdout.strip().splitlines()[-1]
    out = {"what": "differland import-netcdf of the generated paper driver", "months": args.months,
           "all_land": not args.box, "wall_s": round(wall, 1), "time_elapsed": elapsed,
           "max_rss_gb": round(rss_kb / 2**20, 2), "driver_bytes": _du(data),
           "store_bytes": _du(store), "summary": summary, "generation": gen,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(store)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
