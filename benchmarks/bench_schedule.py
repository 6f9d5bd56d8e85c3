"""The experiment's scheduler at the paper's scale (issue 28, item 3): 140 members on a
cluster that declares 16 GPUs (Ray's declared resources; no real GPU), each member's
training a hold of its placement group for ``--hold`` seconds (tests/schedule_probe.py:
only ``calibrate`` is replaced). Reports the makespan against the ideal waves
(ceil(members / 16) x hold), the overhead per member, and the driver's CPU seconds per
member for several grid sizes (linear growth: a constant per member). The first wave also
starts Ray's worker processes (16 at once on this 2-core machine); the waves after it show
the scheduler's own overhead: ``wave_period_s`` against the hold.

    python benchmarks/bench_schedule.py --members 35 70 140 --gpus 16 --hold 20 \\
        --out benchmarks/results/schedule_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, nargs="+", default=[35, 70, 140])
    ap.add_argument("--gpus", type=int, default=16)
    ap.add_argument("--hold", type=float, default=20.0, help="seconds a member holds its GPU")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    import ray

    from schedule_probe import ideal_makespan, paper_grid, run_schedule

    # declared resources: the GPUs are labels the scheduler counts, no device is touched
    ray.init(num_cpus=a.gpus, num_gpus=a.gpus, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        for i, n in enumerate(a.members):
            grid, total = paper_grid(n)
            r = run_schedule(grid, str(Path(tmp) / f"exp{i}"), a.hold)
            ideal = ideal_makespan(r["members"], a.gpus, a.hold)
            starts = r["start_offsets_s"]
            waves = [starts[i] for i in range(0, len(starts), a.gpus)]  # each wave's first start
            # after the first wave (whose members also start Ray's worker processes): the
            # period of the waves against the hold
            period = (waves[-1] - waves[1]) / (len(waves) - 2) if len(waves) > 2 else None
            row = {"members": r["members"], "gpus": a.gpus, "hold_s": a.hold,
                   "makespan_s": round(r["makespan_s"], 2), "ideal_s": ideal,
                   "makespan_vs_ideal": round(r["makespan_s"] / ideal, 4),
                   "overhead_per_member_s": round((r["makespan_s"] - ideal) / r["members"], 4),
                   "driver_cpu_s": round(r["driver_cpu_s"], 2),
                   "driver_cpu_s_per_member": round(r["driver_cpu_s"] / r["members"], 4),
                   "most_at_once": r["most_at_once"],
                   "first_wave_s": round(waves[1], 2) if len(waves) > 1 else None,
                   "wave_period_s": None if period is None else round(period, 3),
                   "wave_period_vs_hold": None if period is None else round(period / a.hold, 4),
                   "done": sum(s == "done" for s in r["states"]),
                   "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
                   "load_avg_1m": os.getloadavg()[0]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    ray.shutdown()
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
