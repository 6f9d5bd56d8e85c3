"""benchmarks/gpu_check.sh (issue 28): its CPU path (--smoke, tiny sizes) runs every step and
prints the summary the GPU run prints, so the command is ready whenever a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_step(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    for heading in ("== 1. differland verify on cpu", "== 2. kernel saturation curve",
                    "== summary", "paper grid: 140 members", "gpu_check: done"):
        assert heading in r.stdout
    s = json.loads((tmp_path / "summary.json").read_text())
    assert [c["pixels"] for c in s["saturation"]] == [64, 128]
    u = s["update"]
    assert set(u["updates_per_s"]) == {"1", "3"} and u["projection"]["waves"] == 9
    assert 0 < u["worker_share_of_kernel_k1"] and u["projection"]["grid_h"] > 0
