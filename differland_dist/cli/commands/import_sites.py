"""``differland import-sites --sites DIR --out URL``: single-site driver files as a pixel store."""

from __future__ import annotations

import argparse
import logging

from differland_dist.cli import store_import

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
    store_import.add_site_selection(parser)
    parser.add_argument("--weights-from-unc", action="store_true",
                        help="observation weights 1/unc^2 (normalised to mean 1 per product) "
                             "instead of 1 where observed")
    store_import.add_target(parser)


def run(args: argparse.Namespace) -> int:
    # imported here: keeps `differland --help` and light commands from importing the site importer
    from differland_dist.data.importers.sites import sites_to_store

    def summary(ds) -> dict:
        return {"sites": int(ds.sizes["pixel"]), "dev": int((ds["split"].values == 1).sum()),
                "test": int((ds["split"].values == 2).sum()), "time": int(ds.sizes["time"]),
                "monthly": bool(args.monthly),
                "per_pixel_forcing": list(ds.attrs.get("per_pixel_forcing") or [])}

    def line(f: dict) -> str:
        return (f"{f['sites']} site(s) ({f['dev']} dev, {f['test']} test), {f['time']} "
                f"{'monthly' if f['monthly'] else 'daily'} steps"
                + (f", per-site {', '.join(f['per_pixel_forcing'])}" if f["per_pixel_forcing"] else ""))

    return store_import.write_store(
        args, lambda out: sites_to_store(
            args.sites, out, monthly=args.monthly, test_sites=args.test_sites,
            dev_sites=args.dev_sites, only=args.only, min_valid_fraction=args.min_valid_fraction,
            weights_from_unc=args.weights_from_unc,
            overwrite=args.overwrite),
        summary, line)
