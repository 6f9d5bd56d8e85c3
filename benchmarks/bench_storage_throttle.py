"""Patch readers against a throttling bucket (issue 30): throughput and tail latency with 8 and
32 concurrent readers in one process, with the process-wide bound on requests in flight
(:mod:`differland_dist.storage.throttle`, default 32 requests) and without it (1024).

    python benchmarks/bench_storage_throttle.py --out benchmarks/results/storage_throttle_cpu.json

The store (synthetic, --resolution degrees, pixel chunks of --patch pixels) is on the GCS
emulator (loopback) behind the fault-injecting proxy of tests/fault_proxy.py, which adds
--latency-ms to every request and answers 429 to a request that arrives while --max-in-flight
are being served (a bucket throttling load). Each reader is a thread with its own PatchReader
(8 concurrent chunk reads) reading --reads single random patches (seeded); latency is per
patch read, throughput is patch reads and stored megabytes per second over the whole run.
The storage client retries each 429 after its jittered exponential wait (gcsfs: 1-2 s, 2-3 s,
...), so throttled requests show in the tail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values`` by linear interpolation."""
    v = sorted(values)
    if not v:
        return float("nan")
    x = q * (len(v) - 1)
    lo = int(x)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (x - lo)


def run_readers(url: str, so: dict, n_readers: int, reads: int, seed: int) -> dict:
    from differland_dist.data.reader import PatchReader
    from differland_dist.data.store import open_store
    from differland_dist.storage.location import Location

    store = open_store(Location(url, so))
    ids = [int(p) for p in store.patch_ids]
    latencies: list[float] = []
    stored = [0]
    lock = threading.Lock()
    errors: list[str] = []

    def reader(k: int) -> None:
        rng = random.Random(seed + k)
        try:
            with PatchReader(store, ["MAT", "SAND"], {}) as r:
                for _ in range(reads):
                    t0 = time.perf_counter()
                    r.read([rng.choice(ids)])
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                with lock:
                    stored[0] += r.stats["stored_bytes_fetched"]
        except Exception as e:  # noqa: BLE001 - reported in the results
            with lock:
                errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(n_readers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"readers": n_readers, "reads": len(latencies), "wall_s": round(wall, 2),
            "patch_reads_per_s": round(len(latencies) / wall, 1),
            "stored_mb_per_s": round(stored[0] / wall / 1e6, 2),
            "latency_p50_s": round(percentile(latencies, 0.5), 3),
            "latency_p99_s": round(percentile(latencies, 0.99), 3),
            "latency_max_s": round(max(latencies, default=float("nan")), 3),
            "errors": errors[:3], "n_errors": len(errors)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=float, default=7.5)
    ap.add_argument("--years", type=int, default=2)
    ap.add_argument("--patch", type=int, default=16, help="max patch size (pixel chunk)")
    ap.add_argument("--reads", type=int, default=6, help="patch reads per reader")
    ap.add_argument("--readers", default="8,32")
    ap.add_argument("--slots", default="32,1024", help="process-wide request slots to compare")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--max-in-flight", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="", help="said in the results (e.g. a loaded machine)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)

    from differland_dist.data.store import write_store
    from differland_dist.storage.location import Location
    from differland_dist.synthetic import make_synthetic
    from differland_dist.storage.throttle import reset_storage_slots
    from fault_proxy import FaultProxy, Faults, proxied
    from storage_servers import gcs_emulator_server

    env = {"python": platform.python_version(), "cpus": os.cpu_count(),
           "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"), "note": a.note,
           "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
    rows = []
    ds = make_synthetic(resolution=a.resolution, years=a.years, seed=0, max_patch_size=a.patch)
    with tempfile.TemporaryDirectory(prefix="bench-throttle-"), gcs_emulator_server() as gcs:
        url = f"{gcs['url_prefix']}/{uuid.uuid4().hex}/s.zarr"
        write_store(ds, Location(url, gcs["storage_options"]))
        faults = Faults(latency_s=a.latency_ms / 1e3, max_in_flight=a.max_in_flight)
        with FaultProxy(gcs["endpoint"], faults) as proxy:
            so = proxied(gcs, proxy)["storage_options"]
            for n in (int(x) for x in a.readers.split(",")):
                for slots in (int(x) for x in a.slots.split(",")):
                    pool = reset_storage_slots(slots)
                    proxy.reset()
                    r = run_readers(url, so, n, a.reads, a.seed)
                    r.update(slots=slots, peak_in_flight=pool.peak,
                             requests=sum(proxy.requests.values()),
                             throttled_429=proxy.injected["throttled"],
                             latency_ms=a.latency_ms, max_in_flight=a.max_in_flight,
                             pixels=int(ds.sizes["pixel"]), patch=a.patch, **env)
                    print(json.dumps(r), flush=True)
                    rows.append(r)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
