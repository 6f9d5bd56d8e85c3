"""``differland import-cube MAPPING.yaml --out URL``: CF (time, lat, lon) datasets as a store."""

from __future__ import annotations

import argparse
import json
import logging
import time

from differland_dist.cli import flags

NAME = "import-cube"
HELP = "import CF (time, lat, lon) netCDF/zarr datasets as a pixel store (a YAML mapping file)"
DESCRIPTION = (
    "Build a pixel store from CF (time, lat, lon) netCDF or zarr datasets (ERA5, MODIS LAI, "
    "FLUXCOM, soil maps ...) described by a YAML mapping file: the target grid and months, which "
    "file and variable feed each store variable and observation (with its uncertainty), "
    "regridding (mean of the source cells in a target cell, or nearest), patch tiling and the "
    "split. Units are converted with cf_units; a variable without a units attribute is an "
    "error. See docs/data.md.")

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mapping", metavar="MAPPING", help="the YAML mapping file (paths relative to it)")
    p.add_argument("--out", required=True, metavar="URL", help="store URL to write")
    p.add_argument("--storage-options", metavar="JSON", default=None,
                   help="fsspec options for --out as a JSON object")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    flags.add_json(p)


def run(args: argparse.Namespace) -> int:
    # imported here: keeps `differland --help` and light commands from importing xarray
    from differland_dist.data.importers.cube import cube_to_store
    from differland_dist.data.store import parse_storage_options
    from differland_dist.storage.location import Location

    t0 = time.perf_counter()
    ds = cube_to_store(args.mapping, Location(args.out, parse_storage_options(args.storage_options)),
                       overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"out": args.out, "pixels": int(ds.sizes["pixel"]),
                          "patches": int(ds["patch"].values.max()) + 1,
                          "time": int(ds.sizes["time"]), "seconds": time.perf_counter() - t0}))
        return 0
    print(f"wrote {args.out}: {ds.sizes['pixel']} land pixels in "
          f"{int(ds['patch'].values.max()) + 1} patches, {ds.sizes['time']} months "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0
