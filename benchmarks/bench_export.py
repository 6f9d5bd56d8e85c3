"""Time and peak memory of ``differland export`` (a CF (time, lat, lon) cube) against the size of
one variable's cube, the bound the export claims.

    python benchmarks/bench_export.py --resolution 2.0 --years 3 --out benchmarks/results/export_cpu.json

A synthetic store, a random network's inference output (local executor, a few series), then
the netCDF and the CMOR zarr export of it. Peak memory is the peak of Python-traced allocations
(``tracemalloc``: numpy's arrays included) during each export.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # random_checkpoint, a test fixture

SERIES = ("gpp", "nee", "nbe", "et", "lai", "pool_som")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=float, default=2.0)
    ap.add_argument("--years", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import xarray as xr

    from differland_dist.inference.cube import export_cube
    from differland_dist.inference.pipeline import InferenceOptions, run_inference
    from random_checkpoint import random_checkpoint
    from differland_dist.synthetic import synth_to_store

    with tempfile.TemporaryDirectory(prefix="bench-export-") as d:
        store = f"{d}/earth.zarr"
        synth_to_store(store, resolution=a.resolution, years=a.years, seed=0)
        ckpt = random_checkpoint(store, f"{d}/net.npz", config={"loss": {"warm_up": 3}})
        t0 = time.perf_counter()
        run_inference(ckpt, f"{d}/out.zarr", store,
                      options=InferenceOptions(executor="local", series=SERIES))
        infer_s = time.perf_counter() - t0
        z = xr.open_zarr(f"{d}/out.zarr", zarr_format=3, consolidated=True)
        one_cube = z.sizes["time"] * z.sizes["lat"] * z.sizes["lon"] * 4
        pixels = z.sizes["pixel"]
        rows = []
        for name, kw in (("cube.nc", {}), ("cmor.zarr", {"cmor": True})):
            tracemalloc.start()
            t0 = time.perf_counter()
            export_cube(f"{d}/out.zarr", f"{d}/{name}", **kw)
            wall = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows.append({"file": name, "wall_s": round(wall, 2), "peak_traced_mb": round(peak / 2**20, 1),
                         "peak_over_one_cube": round(peak / one_cube, 2)})
    result = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "resolution": a.resolution, "years": a.years, "pixels": pixels,
              "series": len(SERIES), "one_cube_mb": round(one_cube / 2**20, 2),
              "inference_s": round(infer_s, 1), "exports": rows}
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
