"""``differland import-netcdf --data-dir DIR --out URL``: the paper's global driver as a store."""

from __future__ import annotations

import argparse
import json
import logging
import time

from differland_dist.cli import flags
from differland_dist.data.importers import netcdf as nc
from differland_dist.data.importers.netcdf import Inputs, netcdf_to_store
from differland_dist.data.store import parse_storage_options
from differland_dist.storage.location import Location

NAME = "import-netcdf"
HELP = "import the paper's gridded global driver (DifferLand_Global layout) as a pixel store"
DESCRIPTION = (
    "Import the global driver of the DifferLand paper: the driver netCDF (time/lat/lon "
    "variables named as in DifferLand_Global), the NOAA CO2 CSV, the valid-pixel mask, the "
    "split-index file and the bulk-assimilation mask. Pixels, their order, the patches (one "
    "per batch index value) and the train/dev split follow the published calibration for the "
    "chosen run; pixels with a negative index are the paper's test cells (split 2). Every run's "
    "index is stored, so a config's data.run picks another run's split without a new import. "
    "PFT fractions in percent are converted to fractions. Inputs are checked before the long "
    "work; the store is marked complete only when fully written.")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=".", metavar="DIR",
                        help="directory holding the five input files under their published names "
                             "(default: the current directory)")
    parser.add_argument("--driver", metavar="FILE", help=f"driver netCDF (default DIR/{nc.DRIVER_FILE})")
    parser.add_argument("--co2", metavar="FILE", help=f"NOAA monthly CO2 CSV (default DIR/{nc.CO2_FILE})")
    parser.add_argument("--valid", metavar="FILE", help=f"valid-pixel mask (default DIR/{nc.VALID_FILE})")
    parser.add_argument("--run-index", metavar="FILE",
                        help=f"split-index file (default DIR/{nc.RUN_INDEX_FILE})")
    parser.add_argument("--bulk-mask", metavar="FILE",
                        help=f"bulk-assimilation mask (default DIR/{nc.BULK_FILE})")
    parser.add_argument("--out", required=True, metavar="URL", help="store URL to write")
    parser.add_argument("--run", type=int, default=1, metavar="R",
                        help="run of the split-index file whose batches are the patches and whose "
                             "split is written, 1-based as the published --run (default 1; every "
                             "run's index is stored for data.run)")
    flags.add_list(parser, "--predictor-sets", default=list(nc.DEFAULT_PREDICTOR_SETS),
                   metavar="SET", help="predictor sets to import; pixels with a gap in any of "
                   "them are left out (default PFT CLIM AGE SOIL)")
    parser.add_argument("--n-time", type=int, default=None, metavar="N",
                        help="use the first N months (default: every month of the driver)")
    parser.add_argument("--max-patch-size", type=int, default=320, metavar="N",
                        help="largest patch in pixels, also the pixel chunk (default 320, the "
                             "published batch size)")
    parser.add_argument("--train-fraction", type=float, default=nc.TRAIN_FRACTION, metavar="F",
                        help="indices 0..round(F x max index) train, larger ones dev, negative "
                             "ones test (default 0.9)")
    flags.add_list(parser, "--skip-products", default=[], metavar="PRODUCT",
                   help="default products not to import, e.g. sif ewt")
    parser.add_argument("--scratch", default=None, metavar="DIR",
                        help="stage the arrays as memory maps under DIR (default: in memory "
                             "unless the driver's temporal data exceed --memory-limit-gb)")
    parser.add_argument("--memory-limit-gb", type=float, default=4.0, metavar="GB",
                        help="stage on disk above this size (default 4)")
    parser.add_argument("--storage-options", metavar="JSON", default=None,
                        help="fsspec options for --out as a JSON object")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    flags.add_progress(parser, what="progress lines of the reads")
    flags.add_json(parser)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    inputs = Inputs.in_dir(args.data_dir, driver=args.driver, co2=args.co2, valid=args.valid,
                           run_index=args.run_index, bulk=args.bulk_mask)
    summary = netcdf_to_store(
        inputs, Location(args.out, parse_storage_options(args.storage_options)), run=args.run, predictor_sets=flags.split_list(args.predictor_sets),
        n_time=args.n_time, max_patch_size=args.max_patch_size,
        train_fraction=args.train_fraction, skip_products=flags.split_list(args.skip_products),
        scratch_dir=args.scratch, memory_limit_bytes=int(args.memory_limit_gb * (1 << 30)),
        overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"out": args.out, **summary, "seconds": time.perf_counter() - t0},
                         default=str))
        return 0
    print(f"wrote {args.out}: {summary['pixels']} pixels ({summary['dev_pixels']} dev, "
          f"{summary['test_pixels']} test) in {summary['patches']} patches, {summary['time']} "
          f"months, products {', '.join(summary['products'])}; {summary['runs']} run(s), PFTs "
          f"from {summary['pft_units_source']}; {time.perf_counter() - t0:.1f} s")
    return 0
