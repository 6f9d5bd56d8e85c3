"""``differland synth --out URL``: write the synthetic Earth as a pixel store."""

from __future__ import annotations

import argparse
import json
import logging
import time

from differland_dist import synthetic as synth
from differland_dist.cli import flags
from differland_dist.data.store import parse_storage_options
from differland_dist.storage.location import Location

NAME = "synth"
HELP = "write the synthetic Earth (known true parameters) as a pixel store"
DESCRIPTION = ("Make a deterministic synthetic Earth: land pixels of a real land-sea mask, "
               "plausible monthly forcing and predictors, hidden true DALEC parameters and "
               "observations made by running DALEC with them. Same seed, same store.")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="URL", help="store URL to write")
    parser.add_argument("--resolution", type=float, default=synth.DEFAULT_RESOLUTION,
                        metavar="DEG", help=f"grid spacing in degrees (default "
                        f"{synth.DEFAULT_RESOLUTION:g}; 0.25 gives ~2.5e5 pixels)")
    parser.add_argument("--start", type=int, default=synth.DEFAULT_START, metavar="YEAR",
                        help=f"first year (default {synth.DEFAULT_START})")
    parser.add_argument("--years", type=int, default=synth.DEFAULT_YEARS, metavar="N",
                        help=f"number of years (default {synth.DEFAULT_YEARS})")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--test-fraction", type=float, default=0.1, metavar="F",
                        help="fraction of patches in the test split: never trained on or "
                             "selected by, only scored (default 0.1)")
    parser.add_argument("--dev-fraction", type=float, default=0.1, metavar="F",
                        help="fraction of patches in the dev split: model selection and early "
                             "stopping (default 0.1)")
    parser.add_argument("--max-patch-size", type=int, default=320, metavar="N",
                        help="largest patch in pixels, also the pixel chunk (default 320)")
    parser.add_argument("--truth", default="random", metavar="DESIGN",
                        help="the hidden parameter relation: 'random' (small random variation "
                             "of every parameter), 'structured' (named gradients: the "
                             "observable parameters follow climate, PFTs, soils or forest age "
                             "strongly; docs/analysis.md), 'random-structured' (a random "
                             "latent design drawn from --seed) or a design FILE.yaml "
                             "(configs/truths/ has the shipped ones; docs/data.md)")
    parser.add_argument("--pft-climate-coupling", type=float, default=synth.PFT_CLIMATE_COUPLING,
                        metavar="C", help="how strongly vegetation cover follows climate, 0-1 "
                        "(default 1: the geography of earlier stores; docs/data.md)")
    parser.add_argument("--storage-options", metavar="JSON", default=None,
                        help="fsspec options as a JSON object")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    flags.add_json(parser)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    ds = synth.synth_to_store(
        Location(args.out, parse_storage_options(args.storage_options)), resolution=args.resolution, start=args.start, years=args.years,
        seed=args.seed, test_fraction=args.test_fraction, dev_fraction=args.dev_fraction,
        max_patch_size=args.max_patch_size, truth=args.truth,
        pft_climate_coupling=args.pft_climate_coupling, overwrite=args.overwrite)
    split = ds["split"].values
    n_dev, n_test = int((split == 1).sum()), int((split == 2).sum())
    if args.json:
        print(json.dumps({"out": args.out, "pixels": int(ds.sizes["pixel"]), "dev": n_dev,
                          "test": n_test, "time": int(ds.sizes["time"]),
                          "patches": int(ds["patch"].values.max()) + 1,
                          "seconds": time.perf_counter() - t0}))
        return 0
    print(f"wrote {args.out}: {ds.sizes['pixel']} pixels ({n_dev} dev, {n_test} test), {ds.sizes['time']} "
          f"months, {int(ds['patch'].values.max()) + 1} patches in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0
