"""``differland calibrate``: train the shared network on a Ray cluster or this machine."""

from __future__ import annotations

import os

NAME = "calibrate"
HELP = "train the network on every training patch of a store (Ray workers; resumable)"
DESCRIPTION = HELP + ". RUN_DIR (path or gs://, s3:// URL) receives config.yaml, metrics.jsonl, checkpoints/ and network.npz."


def add_arguments(p):
    p.add_argument("config", help="experiment config (YAML), e.g. configs/demo.yaml")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (path or URL)")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN_DIR's last checkpoint (starts fresh if it has none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.steps=50 (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config and the store, print the plan, and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out-storage-options", default="{}", help="JSON fsspec options for RUN_DIR")


def run(args) -> int:
    import json

    # The driver only applies optimizer updates: keep it on the CPU (workers get their own
    # platform through the runtime environment).
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from differland_dist.config import load_config
    from differland_dist.data.store import open_store

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        store = open_store(cfg.data.url, dict(cfg.data.storage_options), validate=True)
        print(f"config OK: {args.config}")
        print(f"store OK: {store.url}: {store.n_pixels} pixels x {store.n_time} steps, "
              f"{len(store.train_patches)} train / {len(store.test_patches)} held-out patches")
        print(f"plan: {cfg.training.steps} steps x {cfg.training.patches_per_step} patches on "
              f"{cfg.ray.workers} workers ({cfg.ray.address}) -> {args.out}")
        return 0
    from differland_dist.distributed.trainer import calibrate

    state, cal = calibrate(cfg, args.out, resume=args.resume, progress=not args.no_progress,
                           out_storage_options=json.loads(args.out_storage_options))
    last = [m for m in cal.metrics if m.get("split") == "train"][-1:]
    test = [m for m in cal.metrics if m.get("split") == "test"][-1:]
    print(f"done: {state.step} steps; last train loss {last[0]['loss']:.6g}" if last else "done")
    if test:
        print(f"held-out loss {test[0]['loss']:.6g}")
    print(f"run directory: {args.out}")
    return 0
