"""``differland export OUTPUT_STORE --out FILE.nc``: a CF (time, lat, lon) cube of an output."""

from __future__ import annotations

import argparse
import logging

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
    p.add_argument("--series", default=None, metavar="LIST",
                   help="comma-separated series to export (default: every series of the output)")
    p.add_argument("--set", dest="predictor_set", default=None, metavar="NAME",
                   help="(ensemble.zarr) the predictor set to export (needed when it has several)")
    p.add_argument("--cmor", action="store_true",
                   help="CMOR/ILAMB variable names, units and sign conventions")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--storage-options", metavar="JSON", default=None,
                   help="fsspec options for OUTPUT_STORE as a JSON object")
    p.add_argument("--out-storage-options", metavar="JSON", default=None,
                   help="fsspec options for --out as a JSON object")


def run(args: argparse.Namespace) -> int:
    # imported here: keeps `differland --help` and light commands from importing xarray/JAX
    from differland_dist.data.store import parse_storage_options
    from differland_dist.inference.cube import export_cube

    series = [s for s in (args.series or "").split(",") if s] or None
    dest = export_cube(args.output, args.out, series=series, cmor=args.cmor,
                       predictor_set=args.predictor_set,
                       storage_options=parse_storage_options(args.storage_options),
                       dest_storage_options=parse_storage_options(args.out_storage_options),
                       overwrite=args.overwrite)
    print(f"wrote {dest}")
    return 0
