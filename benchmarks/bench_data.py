"""Benchmark of the data layer (issue 3): ``synth`` time, and the streaming reader's throughput
from local disk and from the GCS emulator against reading the same chunk objects raw.

    python benchmarks/bench_data.py --out benchmarks/results/data_cpu.json
    python benchmarks/bench_data.py --skip-quarter          # without the 0.25 degree store

* synth: wall time of ``differland synth`` in a fresh process (what a user waits for: mask
  loading, JIT compilation, DALEC, writing), median of --repeats, at the default resolution and
  once at 0.25 degree.
* reader: all patches of a store read in batches of --batch patches with ``iter_batches``
  (prefetch 1, no cache), median of --repeats passes; "raw" is ``fs.cat`` of exactly the chunk
  objects those reads fetch, batch by batch (compressed bytes, no decoding, no assembly): the
  floor for any reader of this layout. Throughput in MB/s of stored (compressed) bytes and of
  decoded array bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def bench_synth(url: str, resolution: float, years: int, repeats: int) -> dict:
    """Median wall time of the synth CLI in fresh processes."""
    times = []
    for _ in range(repeats):
        cmd = [sys.executable, "-m", "differland_dist.cli.main", "-q", "synth", "--out", url,
               "--resolution", str(resolution), "--years", str(years), "--overwrite"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    from differland_dist.data.store import PixelStore

    store = PixelStore(url)
    size = sum(store.list_objects().values())
    return {"kind": "synth", "resolution_deg": resolution, "years": years,
            "pixels": store.n_pixels, "months": store.n_time, "patches": int(store.patch_ids.size),
            "store_MB": round(size / 1e6, 1), "repeats": repeats,
            "seconds_median": round(statistics.median(times), 2),
            "seconds_all": [round(t, 2) for t in times]}


def bench_reader(store, label: str, batch: int, repeats: int, max_batches: int | None) -> dict:
    """Reader vs raw bytes: the same chunk objects, batch by batch, fetched with fs.cat."""
    from differland_dist.data.batch import predictor_names
    from differland_dist.data.reader import PatchReader

    preds = predictor_names(["PFT", "CLIM", "AGE", "SOIL"])
    ids = [int(p) for p in store.patch_ids]
    batches = [ids[i:i + batch] for i in range(0, len(ids), batch)]
    if max_batches and len(batches) > max_batches:  # spread over the globe, not the Arctic only
        batches = batches[:: len(batches) // max_batches][:max_batches]
    reader_s = []
    for _ in range(repeats):
        with PatchReader(store, preds, {}) as r:
            t0 = time.perf_counter()
            for _b in r.iter_batches(batches, prefetch=1):
                pass
            reader_s.append(time.perf_counter() - t0)
            stats = dict(r.stats)
            per_batch = []  # the chunk objects each read fetches
            for b in batches:
                keys = {(v, k) for s in r.pixel_slices(b) for v in r._chunked
                        for k in range(s.start // r._chunk_len(v), (s.stop - 1) // r._chunk_len(v) + 1)}
                per_batch.append(sorted(
                    f"{store.root}/{v}/{r._arrays[v].metadata.encode_chunk_key((k,) + (0,) * (len(r._arrays[v].shape) - 1))}"
                    for v, k in keys))
    raw_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for paths in per_batch:
            store.fs.cat(paths)
        raw_s.append(time.perf_counter() - t0)
    rm, wm = statistics.median(reader_s), statistics.median(raw_s)
    stored, decoded = stats["stored_bytes_fetched"], stats["bytes_fetched"]
    return {"kind": "reader", "where": label, "pixels": sum(
                store.patch_slices[p].stop - store.patch_slices[p].start for b in batches for p in b),
            "batches": len(batches), "patches_per_batch": batch,
            "chunks_fetched": stats["chunks_fetched"],
            "stored_MB": round(stored / 1e6, 2), "decoded_MB": round(decoded / 1e6, 2),
            "reader_s_median": round(rm, 3), "raw_cat_s_median": round(wm, 3),
            "reader_MBps_stored": round(stored / 1e6 / rm, 1),
            "reader_MBps_decoded": round(decoded / 1e6 / rm, 1),
            "raw_MBps_stored": round(stored / 1e6 / wm, 1), "repeats": repeats}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=float, default=5.0)
    ap.add_argument("--years", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="patches per batch")
    ap.add_argument("--skip-quarter", action="store_true", help="no 0.25 degree store")
    ap.add_argument("--quarter-batches", type=int, default=16,
                    help="batches of 0.25 degree patches read, spread over the store (of 145)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)

    import jax

    from differland_dist.data.store import PixelStore, open_store, write_store
    from differland_dist.storage.location import Location
    from storage_servers import gcs_emulator_server

    env = {"python": platform.python_version(), "jax": jax.__version__, "cpus": os.cpu_count(),
           "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}
    rows = []

    def emit(r):
        r.update(env)
        print(json.dumps(r), flush=True)
        rows.append(r)

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        default_url = os.path.join(tmp, "default.zarr")
        emit(bench_synth(default_url, a.resolution, a.years, a.repeats))
        local = open_store(default_url)
        emit(bench_reader(local, "local disk", a.batch, a.repeats, None))
        with gcs_emulator_server() as gcs:
            url = f"{gcs['url_prefix']}/{uuid.uuid4().hex}/default.zarr"
            opts = gcs["storage_options"]
            t0 = time.perf_counter()
            write_store(local.ds.load(), Location(url, opts))
            upload = time.perf_counter() - t0
            remote = open_store(Location(url, opts))
            r = bench_reader(remote, "GCS emulator (loopback)", a.batch, a.repeats, None)
            r["write_store_s"] = round(upload, 2)
            emit(r)
        if not a.skip_quarter:
            q_url = os.path.join(tmp, "quarter.zarr")
            emit(bench_synth(q_url, 0.25, a.years, 1))
            t0 = time.perf_counter()
            open_store(q_url)  # timed: includes the full validation scan
            emit({"kind": "open_store+validate", "resolution_deg": 0.25,
                  "seconds": round(time.perf_counter() - t0, 2)})
            emit(bench_reader(PixelStore(q_url), "local disk, 0.25 deg", a.batch, a.repeats,
                              a.quarter_batches))
            del q
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
