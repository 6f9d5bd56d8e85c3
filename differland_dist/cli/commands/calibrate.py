"""``differland calibrate``: train the shared network on a Ray cluster or this machine."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext

from differland_dist.cli import flags
from differland_dist.data import splits

NAME = "calibrate"
HELP = "train the network on every training patch of a store (Ray workers; resumable)"
DESCRIPTION = HELP + ". RUN_DIR (path or gs://, s3:// URL) receives config.yaml, metrics.jsonl, checkpoints/ and network.npz."


def add_arguments(p):
    p.add_argument("config", metavar="CALIBRATION_CONFIG",
                   help="calibration config (YAML: data, model, loss, training, ray; one "
                        "network, one run), e.g. configs/demo.yaml; not an experiment grid "
                        "config (that is `differland experiment`'s)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (path or URL)")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN_DIR's last checkpoint (starts fresh if it has none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.steps=50 (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config and the store, print the plan, and exit")
    flags.add_address(p, default_text="the config's ray.address")
    flags.add_progress(p, what="a progress bar of the training steps")
    flags.add_json(p)
    p.add_argument("--tensorboard", metavar="DIR", default=None,
                   help="also log the metrics to TensorBoard event files in DIR (a local "
                        "directory; needs the [tracking] extra)")
    p.add_argument("--mlflow", metavar="TRACKING_URI", default=None,
                   help="also log the metrics and the config to MLflow: a tracking server "
                        "(http://host:5000), sqlite:///mlflow.db or file:./mlruns; the MLflow "
                        "experiment is the config's name, the run RUN_DIR's last part (needs "
                        "the [mlflow] extra)")
    p.add_argument("--out-storage-options", default="{}", help="JSON fsspec options for RUN_DIR")
    p.add_argument("--force", action="store_true",
                   help="take over RUN_DIR's lease from a run that is gone (its heartbeat is stale "
                        "or its process has ended); a live run's lease is never taken")


def run(args) -> int:
    # The driver only applies optimizer updates: keep it on the CPU (workers get their own
    # platform through the runtime environment).
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # imported here: after JAX_PLATFORMS is set above, and to keep `differland --help` light
    from differland_dist.config import check_against_store, load_config, resolve_epochs
    from differland_dist.data.store import open_store, parse_storage_options
    from differland_dist.storage.location import Location

    overrides = list(args.overrides) + ([f"ray.address={args.address}"] if args.address else [])
    cfg = load_config(args.config, overrides)
    if args.dry_run:
        store = open_store(Location(cfg.data.url, dict(cfg.data.storage_options)), validate=True)
        check_against_store(cfg, store.n_time, store.steps_per_year)
        split = splits.of_data(store, cfg.data)
        if args.json:
            print(json.dumps({"config": args.config, "store": store.url, "pixels": store.n_pixels,
                              "time": store.n_time, "split": split.counts(),
                              "steps": cfg.training.steps,
                              "patches_per_step": cfg.training.patches_per_step,
                              "workers": cfg.ray.workers, "address": cfg.ray.address,
                              "out": args.out}, default=str))
            return 0
        print(f"config OK: {args.config}")
        print(f"store OK: {store.url}: {store.n_pixels} pixels x {store.n_time} steps, "
              f"{split.counts()} (test patches are never read in training)")
        sched = f"{cfg.training.steps} steps"
        if cfg.training.epochs is not None:  # a schedule in epochs: steps of this run's split
            n_train = len(splits.for_training(split, cfg.data.train_on)[0])
            sched = f"{cfg.training.epochs} epochs ({resolve_epochs(cfg, n_train).training.steps} steps)"
        print(f"plan: {sched} x {cfg.training.patches_per_step} patches on "
              f"{cfg.ray.workers} workers ({cfg.ray.address}) -> {args.out}")
        return 0
    # imported here: keeps `differland --help` and light commands from importing JAX/Ray/matplotlib
    from differland_dist.distributed.trainer import calibrate
    from differland_dist.distributed.tracking import MLflowHook, TensorBoardHook
    from differland_dist.storage.location import Location

    run_name = args.out.rstrip("/").rsplit("/", 1)[-1]
    with (TensorBoardHook(args.tensorboard) if args.tensorboard else nullcontext()) as tb, \
         (MLflowHook(args.mlflow, cfg.name, run_name) if args.mlflow else nullcontext()) as ml:
        hooks = [h for h in (tb, ml) if h is not None]
        out = Location(args.out, parse_storage_options(args.out_storage_options))
        state, cal = calibrate(cfg, out, resume=args.resume, progress=args.progress,
                               force=args.force, hooks=hooks or None)
    last = [m for m in cal.metrics if m.get("split") == "train"][-1:]
    dev = [m for m in cal.metrics if m.get("split") == "dev"][-1:]
    if args.json:
        print(json.dumps({"run_dir": args.out, "steps": int(state.step),
                          "train_loss": last[0]["loss"] if last else None,
                          "dev_loss": dev[0]["loss"] if dev else None}))
        return 0
    print(f"done: {state.step} steps; last train loss {last[0]['loss']:.6g}" if last else "done")
    if dev:
        print(f"dev loss {dev[0]['loss']:.6g} (the dev split; test patches were not used)")
    print(f"run directory: {args.out}")
    return 0
