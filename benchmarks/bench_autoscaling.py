"""Autoscaling figures (issue 28): on a local autoscaling cluster (tests/fake_cluster.py: a
head with 0 CPUs, 0-2 one-CPU worker nodes of Ray's fake provider, idle timeout 6 s), the
time from a 1-CPU task's submission to the first worker node, to the task's result, and from
idle back to no worker node. The cluster never runs ``ray stop``.

    python benchmarks/bench_autoscaling.py --out benchmarks/results/autoscaling_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

DRIVER = ("import ray, time; ray.init(address='auto'); t = time.time(); "
          "ray.get(ray.remote(num_cpus=1)(lambda: 1).remote()); print('task_s', time.time() - t, flush=True)")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    from fake_cluster import FakeAutoscalingCluster

    types = {"cpu1": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}}
    t0 = time.monotonic()
    with FakeAutoscalingCluster(types, idle_timeout_minutes=0.1) as c:
        start_s = time.monotonic() - t0
        drv = subprocess.Popen([sys.executable, "-c", DRIVER], env=c.env, stdout=subprocess.PIPE, text=True)
        up_s = c.wait_for_nodes(lambda n: n >= 1, 300)
        out = drv.communicate(timeout=300)[0]  # the autoscaler's events are printed there too
        task_s = float(next(x for x in out.splitlines() if x.startswith("task_s ")).split()[1])
        down_s = c.wait_for_nodes(lambda n: n == 0, 300)
    row = {"head_start_s": round(start_s, 2), "first_worker_node_s": round(up_s, 2),
           "task_result_s": round(task_s, 2), "idle_to_zero_nodes_s": round(down_s, 2),
           "idle_timeout_s": 6, "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
           "load_avg_1m": os.getloadavg()[0]}
    print(json.dumps(row))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
