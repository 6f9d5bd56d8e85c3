"""Workers report their resident memory (benchmarks/bench_cache_memory.py reads it per step)."""

import numpy as np

from differland_dist.distributed.worker import resident_memory


def test_resident_memory_sees_an_allocation():
    before = resident_memory()
    assert before["rss_bytes"] > 0 and before["peak_rss_bytes"] >= before["rss_bytes"]
    block = np.ones(64 * 2**20 // 8)          # 64 MiB, touched
    after = resident_memory()
    assert after["rss_bytes"] - before["rss_bytes"] > 48 * 2**20
    assert after["peak_rss_bytes"] >= after["rss_bytes"]
    del block
