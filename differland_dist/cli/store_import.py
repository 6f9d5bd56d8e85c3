"""What the store importers' commands share (import-cube, import-fluxnet, import-sites): the
target flags, the site-selection flags, and writing the store with one result line or JSON."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

from differland_dist.cli import flags
from differland_dist.storage.location import Location


def add_target(p: argparse.ArgumentParser) -> None:
    """``--out URL``, ``--storage-options JSON`` (fsspec options of --out), ``--overwrite``, ``--json``."""
    p.add_argument("--out", required=True, metavar="URL", help="store URL to write")
    p.add_argument("--storage-options", metavar="JSON", default=None,
                   help="fsspec options for --out as a JSON object")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    flags.add_json(p)


def add_site_selection(p: argparse.ArgumentParser) -> None:
    """The flags of the site importers: daily or monthly steps, held-out and chosen sites."""
    p.add_argument("--monthly", action="store_true", help="aggregate the days to calendar months")
    p.add_argument("--min-valid-fraction", type=float, default=0.5, metavar="F",
                   help="(monthly) share of a month's days an observation needs to give a "
                        "monthly value (default 0.5)")
    flags.add_list(p, "--test-sites", default=None, metavar="ID",
                   help="sites held out as test (split = 2: never trained on or selected by), "
                        "for leave-sites-out experiments")
    flags.add_list(p, "--dev-sites", default=None, metavar="ID",
                   help="sites held out as dev (split = 1: watched during training, used for "
                        "model selection)")
    flags.add_list(p, "--only", default=None, metavar="ID",
                   help="import only these sites (default: every site of site_coords.csv)")


def write_store(args: argparse.Namespace, build: Callable[[Location], Any],
                summary: Callable[[Any], dict[str, Any]], line: Callable[[dict[str, Any]], str]) -> int:
    """Run ``build(out)`` (the importer writing the store at --out, reached with
    --storage-options; returns the written Dataset), then print ``{"out", **summary(ds),
    "seconds"}`` with --json, else ``wrote URL: <line(summary)> in S s``."""
    # imported here: keeps `differland --help` and light commands from importing zarr/xarray
    from differland_dist.data.store import parse_storage_options

    t0 = time.perf_counter()
    ds = build(Location(args.out, parse_storage_options(args.storage_options)))
    facts = summary(ds)
    if args.json:
        print(json.dumps({"out": args.out, **facts, "seconds": time.perf_counter() - t0}))
    else:
        print(f"wrote {args.out}: {line(facts)} in {time.perf_counter() - t0:.1f} s")
    return 0
