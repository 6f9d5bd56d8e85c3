"""``differland``: the command-line entry point. Discovers subcommands in ``cli/commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from differland_dist.common import allocator
from differland_dist.common import progress
from differland_dist.cli import commands as _commands_pkg
from differland_dist.errors import DifferlandError
from differland_dist.common.version import describe

# Before gcsfs is imported anywhere: recent gcsfs probes the bucket type over gRPC, which
# hangs against emulators and adds a round trip against GCS.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def _discover():
    mods = []
    for info in pkgutil.iter_modules(_commands_pkg.__path__):
        mod = importlib.import_module(f"{_commands_pkg.__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: m.NAME)


class _VersionAction(argparse.Action):
    """``--version``: the commit is looked up only when asked (it runs git)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(describe())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="differland",
        description="Distributed calibration of the DifferLand hybrid land model on Ray.",
    )
    parser.add_argument("--version", action=_VersionAction, nargs=0,
                        help="print the version (and the git commit when known) and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _discover():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """The log output of this process and of the Ray workers its commands start (the one place
    that configures output; library code only logs)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("jax", "absl", "urllib3", "google", "botocore", "asyncio", "fsspec", "gcsfs",
                  "s3fs", "aiobotocore", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # imported here: keeps `differland --help` light
    from differland_dist.distributed.worker import LOG_SETUP_ENV

    os.environ[LOG_SETUP_ENV] = "differland_dist.cli.main:configure_worker_logging"


def configure_worker_logging() -> None:
    """The log output of a calibration worker process a command started: INFO lines on
    stderr, which Ray forwards to the driver when it logs at DEBUG (``log_to_driver``)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _preconfigure(argv: list[str]) -> None:
    """Settings that must precede the first import of JAX (command modules import it)."""
    allocator.tune()  # before JAX's threads and buffers exist
    if "bench" in argv[:3] and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        n = os.cpu_count() or 1
        for i, a in enumerate(argv):
            if a.startswith("--cpu-devices"):
                n = int(a.split("=", 1)[1]) if "=" in a else int(argv[i + 1])
        # a CPU exposes one host device per core so the bench can split pixels across cores;
        # GPUs and TPUs are unaffected
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={n}").strip()


def check_storage_options(args: argparse.Namespace) -> None:
    """Every ``--*storage-options`` value must be a JSON object. Checked for all commands before
    any of them starts work, so a typo is a one-line error naming the flag. The value is not
    echoed: it may hold credentials."""
    for dest, value in sorted(vars(args).items()):
        if not (dest.endswith("storage_options") and isinstance(value, str) and value.strip()):
            continue
        # imported here: keeps `differland --help` and light commands from importing zarr/xarray
        from differland_dist.data.store import parse_storage_options

        parse_storage_options(value, "--" + dest.replace("_", "-"))


def main(argv: list[str] | None = None) -> int:
    _preconfigure(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    configure_logging(args.verbose, args.quiet)
    level = progress.log.level
    progress.enable(getattr(args, "progress", True))
    try:
        check_storage_options(args)
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except DifferlandError as e:  # clear, expected errors: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:  # main() may be called again in this process (tests, notebooks)
        progress.log.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
