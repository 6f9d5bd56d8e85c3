"""``differland validate URL``: check a pixel store against the schema."""

from __future__ import annotations

import argparse
import json
import logging

from differland_dist.cli import flags
from differland_dist.data.store import PixelStore, parse_storage_options
from differland_dist.data.validate import summary, validate_store
from differland_dist.storage.location import Location

NAME = "validate"
HELP = "check a pixel store: presence, dims, dtypes, units, ranges, gaps, missing or corrupt chunks"
DESCRIPTION = ("Check a pixel store (local path, file://, memory://, gs://, s3://) and print "
               "every problem with its variable and pixel/time range; exit 1 if there is any. "
               "Every chunk is read and verified (crc32c checksum, compressed frame, size).")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="store URL")
    parser.add_argument("--storage-options", metavar="JSON", default=None,
                        help='fsspec options as a JSON object, e.g. \'{"token": "anon"}\'')
    flags.add_progress(parser, what="progress lines of the chunk scan")
    flags.add_json(parser)


def run(args: argparse.Namespace) -> int:
    where = Location(args.url, parse_storage_options(args.storage_options))
    problems = validate_store(where)
    if args.json:
        print(json.dumps({"url": args.url, "valid": not problems, "problems": problems,
                          "summary": None if problems else summary(PixelStore(where))},
                         default=str))
        return 1 if problems else 0
    if problems:
        print(f"{args.url}: {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        return 1
    info = summary(PixelStore(where))
    print(f"{args.url}: valid")
    for key, value in info.items():
        print(f"  {key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return 0
