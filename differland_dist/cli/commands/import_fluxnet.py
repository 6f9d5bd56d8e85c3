"""``differland import-fluxnet --sites DIR --out URL``: FLUXNET2015/ONEFlux FULLSET CSVs as a
site store."""

from __future__ import annotations

import argparse
import logging

from differland_dist.cli import store_import

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
    store_import.add_site_selection(p)
    p.add_argument("--min-qc", type=float, default=0.5, metavar="F",
                   help="the day's fraction of measured or good gap-filled records an "
                        "observation needs (default 0.5)")
    p.add_argument("--weights-from-unc", action="store_true",
                   help="NEE weights 1/NEE_VUT_REF_JOINTUNC^2 (normalised to mean 1)")
    store_import.add_target(p)


def run(args: argparse.Namespace) -> int:
    # imported here: keeps `differland --help` and light commands from importing pandas/xarray
    from differland_dist.data.importers.fluxnet_csv import fluxnet_csv_to_store

    return store_import.write_store(
        args, lambda out: fluxnet_csv_to_store(
            args.sites, out, overwrite=args.overwrite, monthly=args.monthly,
            test_sites=args.test_sites, dev_sites=args.dev_sites, only=args.only,
            min_valid_fraction=args.min_valid_fraction, weights_from_unc=args.weights_from_unc,
            min_qc=args.min_qc),
        lambda ds: {"sites": int(ds.sizes["pixel"]), "time": int(ds.sizes["time"]),
                    "monthly": bool(args.monthly)},
        lambda f: f"{f['sites']} site(s), {f['time']} {'monthly' if f['monthly'] else 'daily'} steps")
