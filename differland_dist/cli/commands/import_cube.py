"""``differland import-cube MAPPING.yaml --out URL``: CF (time, lat, lon) datasets as a store."""

from __future__ import annotations

import argparse
import logging

from differland_dist.cli import store_import

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
    store_import.add_target(p)


def run(args: argparse.Namespace) -> int:
    # imported here: keeps `differland --help` and light commands from importing xarray
    from differland_dist.data.importers.cube import cube_to_store

    return store_import.write_store(
        args, lambda out: cube_to_store(args.mapping, out, overwrite=args.overwrite),
        lambda ds: {"pixels": int(ds.sizes["pixel"]), "patches": int(ds["patch"].values.max()) + 1,
                    "time": int(ds.sizes["time"])},
        lambda f: f"{f['pixels']} land pixels in {f['patches']} patches, {f['time']} months")
