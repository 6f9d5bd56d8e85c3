"""Workers report their resident memory (benchmarks/bench_cache_memory.py reads it per step)."""

import subprocess
import sys

CODE = """
import numpy as np
from differland_dist.distributed.worker import resident_memory
before = resident_memory()
assert before["rss_bytes"] > 0 and before["peak_rss_bytes"] >= before["rss_bytes"], before
block = np.ones(256 * 2**20 // 8)          # 256 MiB, touched
after = resident_memory()
assert after["rss_bytes"] - before["rss_bytes"] > 200 * 2**20, (before, after)
assert after["peak_rss_bytes"] >= after["rss_bytes"], after
print("ok")
"""


def test_resident_memory_sees_an_allocation():
    # a fresh process: in a long-lived one, freed pages already resident could be reused
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
