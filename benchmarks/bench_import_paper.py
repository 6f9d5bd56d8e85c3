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


CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


def _make_cgroup(limit_gb: float) -> Path:
    """A new cgroup-v1 memory group limited to ``limit_gb`` (swap off on this VM)."""
    cg = CGROUP_ROOT / f"differland-bench-{os.getpid()}"
    cg.mkdir()
    (cg / "memory.limit_in_bytes").write_text(str(int(limit_gb * 2**30)))
    return cg


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def _run_sampled(cmd: list[str], cgroup: Path | None) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``cmd`` (``/usr/bin/time -v python ...``), in ``cgroup`` if given, sampling the
    resident memory of the python process under ``time``."""
    def enter():
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    peak = {"RssAnon": 0, "RssFile": 0}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=enter) as proc:
        import threading

        done = threading.Event()

        def sample():
            while not done.wait(0.5):
                for child in _children(proc.pid):
                    st = _status_kb(child)
                    for k in peak:
                        peak[k] = max(peak[k], st.get(k, 0))

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        out, err = proc.communicate()
        done.set()
        t.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), {
        "peak_rss_anon_gb": round(peak["RssAnon"] / 2**20, 2),
        "peak_rss_file_gb": round(peak["RssFile"] / 2**20, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="directory for the driver files, store and scratch")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--months", type=int, default=276)
    p.add_argument("--box", action="store_true", help="only the test's European box (small)")
    p.add_argument("--keep", action="store_true", help="keep the store afterwards")
    p.add_argument("--zlib", action="store_true", help="compress the generated netCDF (slower to make)")
    p.add_argument("--memory-limit-gb", type=float, default=None,
                   help="run the import in a cgroup with this memory limit (needs cgroup v1 write access)")
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
    cgroup = _make_cgroup(args.memory_limit_gb) if args.memory_limit_gb else None
    t0 = time.perf_counter()
    try:
        res, sampled = _run_sampled(cmd, cgroup)
        wall = time.perf_counter() - t0
        limit = None
        if cgroup is not None:
            limit = {"limit_gb": args.memory_limit_gb,
                     "cgroup_max_usage_gb": round(int((cgroup / "memory.max_usage_in_bytes").read_text()) / 2**30, 2),
                     "cgroup_failcnt": int((cgroup / "memory.failcnt").read_text()),
                     "oom_kills": int(re.search(r"oom_kill (\d+)", (cgroup / "memory.oom_control").read_text()).group(1))
                     if "oom_kill " in (cgroup / "memory.oom_control").read_text() else None}
    finally:
        if cgroup is not None:
            cgroup.rmdir()
    if res.returncode != 0:
        print(res.stdout[-3000:], res.stderr[-3000:], file=sys.stderr)
        return 1
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    elapsed = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", res.stderr).group(1)
    summary = res.stdout.strip().splitlines()[-1]
    out = {"what": "differland import-netcdf of the generated paper driver", "months": args.months,
           "all_land": not args.box, "wall_s": round(wall, 1), "time_elapsed": elapsed,
           "max_rss_gb": round(rss_kb / 2**20, 2), **sampled, "memory_limit": limit,
           "driver_bytes": _du(data),
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
