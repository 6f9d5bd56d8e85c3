"""``differland import-fluxnet --sites DIR --out URL``: FLUXNET2015/ONEFlux FULLSET CSVs as a
site store."""

from __future__ import annotations

import argparse
import json
import logging
import time

from differland_dist.cli import flags

NAME = "import-fluxnet"
HELP = "import FLUXNET2015 / ONEFlux FULLSET site CSVs (DD, or HH/HR aggregated) as a site store"
DESCRIPTION = (
    "Import the standard FLUXNET2015 / ONEFlux FULLSET CSVs of a directory (site_coords.csv and "
    "FLX_<SITE>_FLUXNET2015_FULLSET_DD_*.csv, or the HH/HR file aggregated to days) as a site "
    "store like import-sites writes: TA_F, SW_IN_F, VPD_F, P_F, CO2_F_MDS as forcing; "
    "GPP_NT_VUT_REF, RECO_NT_VUT_REF, NEE_VUT_REF (as obs_nbe) and LE_F_MDS (as ET) as "
    "observations, days below --min-qc good-quality fraction are gaps. See docs/data.md.")

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sites", required=True, metavar="DIR",
                   help="directory with site_coords.csv and the FULLSET CSVs")
    p.add_argument("--out", required=True, metavar="URL", help="store URL to write")
    p.add_argument("--monthly", action="store_true", help="aggregate the days to calendar months")
    p.add_argument("--min-valid-fraction", type=float, default=0.5, metavar="F",
                   help="(monthly) share of a month's days an observation needs (default 0.5)")
    p.add_argument("--min-qc", type=float, default=0.5, metavar="F",
                   help="the day's fraction of measured or good gap-filled records an "
                        "observation needs (default 0.5)")
    flags.add_list(p, "--test-sites", default=None, metavar="ID", help="sites held out as test")
    flags.add_list(p, "--dev-sites", default=None, metavar="ID", help="sites held out as dev")
    flags.add_list(p, "--only", default=None, metavar="ID", help="import only these sites")
    p.add_argument("--weights-from-unc", action="store_true",
                   help="NEE weights 1/NEE_VUT_REF_JOINTUNC^2 (normalised to mean 1)")
    p.add_argument("--storage-options", metavar="JSON", default=None,
                   help="fsspec options for --out as a JSON object")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    flags.add_json(p)


def run(args: argparse.Namespace) -> int:
    # imported here: keeps `differland --help` and light commands from importing pandas/xarray
    from differland_dist.data.importers.fluxnet_csv import fluxnet_csv_to_store
    from differland_dist.data.store import parse_storage_options
    from differland_dist.storage.location import Location

    t0 = time.perf_counter()
    ds = fluxnet_csv_to_store(
        args.sites, Location(args.out, parse_storage_options(args.storage_options)), overwrite=args.overwrite,
        monthly=args.monthly, test_sites=args.test_sites, dev_sites=args.dev_sites, only=args.only,
        min_valid_fraction=args.min_valid_fraction, weights_from_unc=args.weights_from_unc,
        min_qc=args.min_qc)
    if args.json:
        print(json.dumps({"out": args.out, "sites": int(ds.sizes["pixel"]),
                          "time": int(ds.sizes["time"]), "monthly": bool(args.monthly),
                          "seconds": time.perf_counter() - t0}))
        return 0
    print(f"wrote {args.out}: {ds.sizes['pixel']} site(s), {ds.sizes['time']} "
          f"{'monthly' if args.monthly else 'daily'} steps in {time.perf_counter() - t0:.1f} s")
    return 0
