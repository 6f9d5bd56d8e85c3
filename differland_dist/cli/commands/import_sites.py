"""``differland import-sites --sites DIR --out URL``: single-site driver files as a pixel store."""

from __future__ import annotations

import argparse
import json
import logging
import time

from differland_dist.cli import flags
from differland_dist.data.store import parse_storage_options
from differland_dist.storage.location import Location

NAME = "import-sites"
HELP = "import single-site driver files (FLUXNET layout) as a pixel store"
DESCRIPTION = (
    "Import the single-site driver files of a directory (site_coords.csv and one <SITE_ID>.nc "
    "per site, the DifferLand v1.0 layout) as a pixel store: each site a pixel and a patch; "
    "predictors from site_coords.csv (IGBP class one-hot, MAT, MAP, elevation); tower GPP, RECO, "
    "ET, NEE (as obs_nbe) and satellite LAI as observations; daily, or calendar months with "
    "--monthly. Every file is checked before anything is written; the store is marked complete "
    "only when fully written.")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sites", required=True, metavar="DIR",
                        help="directory with site_coords.csv and <SITE_ID>.nc files")
    parser.add_argument("--out", required=True, metavar="URL", help="store URL to write")
    parser.add_argument("--monthly", action="store_true",
                        help="aggregate the daily files to calendar months")
    parser.add_argument("--min-valid-fraction", type=float, default=0.5, metavar="F",
                        help="(monthly) share of a month's days an observation needs to give a "
                             "monthly value (default 0.5)")
    flags.add_list(parser, "--test-sites", default=None, metavar="ID",
                        help="sites held out as test (split = 2: never trained on or selected "
                             "by), for leave-sites-out experiments")
    flags.add_list(parser, "--dev-sites", default=None, metavar="ID",
                        help="sites held out as dev (split = 1: watched during training, used "
                             "for model selection)")
    flags.add_list(parser, "--only", default=None, metavar="ID",
                        help="import only these sites (default: every site of site_coords.csv)")
    parser.add_argument("--weights-from-unc", action="store_true",
                        help="observation weights 1/unc^2 (normalised to mean 1 per product) "
                             "instead of 1 where observed")
    parser.add_argument("--storage-options", metavar="JSON", default=None,
                        help="fsspec options for --out as a JSON object")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    flags.add_json(parser)


def run(args: argparse.Namespace) -> int:
    # imported here: keeps `differland --help` and light commands from importing the site importer
    from differland_dist.data.importers.sites import sites_to_store

    t0 = time.perf_counter()
    ds = sites_to_store(
        args.sites, Location(args.out, parse_storage_options(args.storage_options)), monthly=args.monthly, test_sites=args.test_sites,
        dev_sites=args.dev_sites, only=args.only,
        min_valid_fraction=args.min_valid_fraction, weights_from_unc=args.weights_from_unc,
        overwrite=args.overwrite)
    per_pixel = ds.attrs.get("per_pixel_forcing") or []
    if args.json:
        print(json.dumps({"out": args.out, "sites": int(ds.sizes["pixel"]),
                          "dev": int((ds["split"].values == 1).sum()),
                          "test": int((ds["split"].values == 2).sum()),
                          "time": int(ds.sizes["time"]), "monthly": bool(args.monthly),
                          "per_pixel_forcing": list(per_pixel),
                          "seconds": time.perf_counter() - t0}))
        return 0
    print(f"wrote {args.out}: {ds.sizes['pixel']} site(s) "
          f"({int((ds['split'].values == 1).sum())} dev, {int((ds['split'].values == 2).sum())} "
          f"test), {ds.sizes['time']} "
          f"{'monthly' if args.monthly else 'daily'} steps"
          + (f", per-site {', '.join(per_pixel)}" if per_pixel else "")
          + f" in {time.perf_counter() - t0:.1f} s")
    return 0
