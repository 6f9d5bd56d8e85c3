"""``differland export OUTPUT_STORE --out FILE.nc``: a CF (time, lat, lon) cube of an output."""

from __future__ import annotations

import argparse
import json
import logging

from differland_dist.cli import flags

NAME = "export"
HELP = "write a CF (time, lat, lon) cube (.nc or .zarr) of an inference output or ensemble.zarr"
DESCRIPTION = (
    "Write the monthly series of a complete inference output (or an experiment's ensemble.zarr: "
    "mean, sd and quantiles of one predictor set) as CF-1.8 (time, lat, lon) cubes that CDO, "
    "NCO, ncview and ILAMB read: time_bnds, lat/lon bounds, crs, cell_area, standard names, "
    "'time: mean' for fluxes, the split as flags. --cmor renames and converts to CMOR/ILAMB "
    "variables (gpp kg m-2 s-1, nbp = -nbe positive downward, evspsbl, cSoil kg m-2 ...; see "
    "docs/inference.md).")

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", metavar="OUTPUT_STORE",
                   help="an inference output (inference.zarr) or an experiment's ensemble.zarr")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the cube to write: a .nc (netCDF4) or .zarr name")
    flags.add_list(p, "--series", default=None, metavar="SERIES",
                   help="series to export (default: every series of the output)")
    p.add_argument("--set", dest="predictor_set", default=None, metavar="NAME",
                   help="(ensemble.zarr) the predictor set to export (needed when it has several)")
    p.add_argument("--cmor", action="store_true",
                   help="CMOR/ILAMB variable names, units and sign conventions")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--storage-options", metavar="JSON", default=None,
                   help="fsspec options for OUTPUT_STORE as a JSON object")
    p.add_argument("--out-storage-options", metavar="JSON", default=None,
                   help="fsspec options for --out as a JSON object")
    flags.add_json(p)


def run(args: argparse.Namespace) -> int:
    # imported here: keeps `differland --help` and light commands from importing xarray/JAX
    from differland_dist.data.store import parse_storage_options
    from differland_dist.inference.cube import export_cube
    from differland_dist.storage.location import Location

    series = args.series or None
    dest = export_cube(Location(args.output, parse_storage_options(args.storage_options)),
                       Location(args.out, parse_storage_options(args.out_storage_options)),
                       series=series, cmor=args.cmor, predictor_set=args.predictor_set,
                       overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"out": str(dest), "cmor": bool(args.cmor), "series": series}))
        return 0
    print(f"wrote {dest}")
    return 0
