"""``differland infer --checkpoint CKPT --store URL --out URL``: batch inference with Ray Data."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from differland_dist.cli import flags

NAME = "infer"
HELP = "run a trained network and DALEC over every pixel of a store (Ray Data, resumable)"
DESCRIPTION = (
    "Batch inference: per pixel the 31 + 2 + 7 parameters, gridded parameter maps and monthly "
    "series (GPP, Reco, NEE, NBE, fire, ET, LAI, SIF, pools ...) written to a zarr store by a "
    "Ray Data pipeline with an autoscaling actor pool. Idempotent and resumable: a rerun "
    "computes only chunks that are missing; a complete output is left as it is. "
    "See docs/inference.md for the layout.")

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    # imported here: keeps `differland --help` and light commands from importing JAX/Ray/matplotlib
    from differland_dist.vocabulary.series import DEFAULT_SERIES

    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="checkpoint .npz or run directory (its network.npz, else latest checkpoint)")
    p.add_argument("--store", metavar="URL", default=None,
                   help="input pixel store (default: data.url of the checkpoint's config)")
    p.add_argument("--out", required=True, metavar="URL",
                   help="output zarr store; with --format netcdf a directory that receives "
                        "inference.zarr and parameters.nc, maps.nc, series.nc")
    p.add_argument("--format", choices=("zarr", "netcdf"), default="zarr",
                   help="zarr (default) or netcdf (also export netCDF files)")
    p.add_argument("--min-actors", type=int, default=1, metavar="N", help="actor pool minimum (default 1)")
    p.add_argument("--max-actors", type=int, default=2, metavar="N", help="actor pool maximum (default 2)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, metavar="N",
                   help="CPUs per actor (default 1)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, metavar="N",
                   help="GPUs per actor (default 0; > 0 runs JAX on CUDA; fractions share a GPU)")
    p.add_argument("--jax-platforms", default="", metavar="P",
                   help="JAX_PLATFORMS of the actors (default: cuda with GPUs, else cpu)")
    p.add_argument("--pixels-per-task", type=int, default=4096, metavar="N",
                   help="pixels per task, in whole store chunks (default 4096; larger on GPUs)")
    p.add_argument("--chunk-pixels", type=int, default=2048, metavar="N",
                   help="target pixels per output chunk, in whole store chunks (default 2048)")
    flags.add_list(p, "--series", default=list(DEFAULT_SERIES), metavar="NAME",
                   help="output series (default: all)")
    p.add_argument("--max-tasks", type=int, default=None, metavar="N",
                   help="compute at most N tasks in this call; a later call continues")
    flags.add_executor(p, what="where the pixels are computed (ray: a Ray Data actor pool)")
    flags.add_address(p, default_text="start a local Ray or join RAY_ADDRESS")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output made from another checkpoint, store or series")
    p.add_argument("--force", action="store_true",
                   help="take over the output's lease from an infer that is gone (stale heartbeat "
                        "or ended process); a live one's lease is never taken")
    p.add_argument("--storage-options", metavar="JSON", default=None,
                   help="fsspec options (JSON) for the store and checkpoint (default: the config's)")
    p.add_argument("--out-storage-options", metavar="JSON", default=None,
                   help="fsspec options (JSON) for --out (default: --storage-options)")
    flags.add_progress(p, what="progress lines, and Ray Data's bars when stderr is a terminal",
                       aliases=[("--progress-bars", True)])
    flags.add_json(p)


def run(args: argparse.Namespace) -> int:
    # imported here: keeps `differland --help` and light commands from importing JAX/Ray/matplotlib
    from differland_dist.data.store import parse_storage_options
    from differland_dist.inference.pipeline import InferenceOptions, run_inference
    from differland_dist.storage.location import Location

    so = parse_storage_options(args.storage_options) if args.storage_options else None
    oso = parse_storage_options(args.out_storage_options) if args.out_storage_options else None
    options = InferenceOptions(
        min_actors=args.min_actors, max_actors=args.max_actors, cpus_per_actor=args.cpus_per_actor,
        gpus_per_actor=args.gpus_per_actor, pixels_per_task=args.pixels_per_task,
        chunk_pixels=args.chunk_pixels,
        series=tuple(flags.split_list(args.series)),
        executor=args.executor, address=args.address, jax_platforms=args.jax_platforms,
        max_tasks=args.max_tasks,
        progress_bars=args.progress and sys.stderr.isatty())
    # --storage-options reach the store and the checkpoint (default: the config's, for the
    # store); --out-storage-options the output (default: the store's)
    store = Location(args.store, so) if args.store and so is not None else args.store
    r = run_inference(Location(args.checkpoint, so), Location(args.out, oso) if oso is not None else args.out,
                      store, options=options, overwrite=args.overwrite,
                      netcdf=args.format == "netcdf", force=args.force)
    summary = r.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    if r.already_complete:
        print(f"{r.out}: already complete ({r.n_pixels} pixels x {r.n_time} steps); nothing to do")
    else:
        fr = summary["time_fractions"]
        print(f"{r.out}: {summary['chunks_computed']} chunk(s), {r.pixels_computed} pixels x "
              f"{r.n_time} steps in {r.wall_s:.1f} s ({summary['pixel_months_per_s']:.3g} "
              f"pixel-months/s, {summary['actors']} actor(s)); actor time: read "
              f"{fr['read']:.0%}, compute {fr['compute']:.0%}, write {fr['write']:.0%}, "
              f"start-up {fr['init']:.0%}; {'complete' if r.complete else 'partial: run again to continue'}")
    for f in r.netcdf:
        print(f"netCDF: {f}")
    return 0
