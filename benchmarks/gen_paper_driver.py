"""Write a generated driver set in the paper's published layout (tests/paper_driver.py).

    python benchmarks/gen_paper_driver.py --out /tmp/paper_driver --months 276 --all-land
    python benchmarks/gen_paper_driver.py --out /tmp/paper_small --months 24   # the test's box

0.25 degree (720 x 1440), the real land mask, percent PFTs, 100 runs with fixed negative test
cells, the NOAA CO2 CSV and the per-run predictor mean/std CSVs. ``--all-land`` fills every
land cell north of 60 S (the full size); without it only the test's European box is valid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory to write the files into")
    p.add_argument("--months", type=int, default=24, help="monthly steps (the paper: 276)")
    p.add_argument("--all-land", action="store_true", help="every land cell valid (full size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-zlib", action="store_true", help="write the netCDF variables uncompressed")
    args = p.parse_args(argv)
    from paper_driver import write_paper_driver

    t0 = time.perf_counter()
    facts = write_paper_driver(args.out, n_months=args.months, seed=args.seed,
                               valid_box=None if args.all_land else (46.0, 54.0, 0.0, 20.0),
                               zlib=not args.no_zlib)
    sizes = {name: path.stat().st_size for name, path in facts["files"].items()}
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "months": args.months,
                      "valid_cells": int(facts["valid"].sum()), "test_cells": facts["test_cells"],
                      "bytes": sizes}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
