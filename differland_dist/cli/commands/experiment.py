"""``differland experiment``: a predictor-set × ensemble grid of calibrations on one Ray cluster."""

from __future__ import annotations

import logging
import os

from differland_dist.errors import DifferlandError

NAME = "experiment"
HELP = "train a grid of predictor sets x ensemble members on Ray, then ensemble and score it"
DESCRIPTION = (HELP + ". DIR (path or gs://, s3:// URL) receives experiment.yaml, experiment.jsonl, "
               "members/<set>/m<seed>/ run directories, ensemble.zarr, scores.json/.md and "
               "figures/. Rerun with --resume to finish what is unfinished.")


def add_arguments(p):
    p.add_argument("config", help="experiment config (YAML), e.g. configs/experiment_demo.yaml")
    p.add_argument("--out", required=True, metavar="DIR", help="experiment directory (path or URL)")
    p.add_argument("--resume", action="store_true",
                   help="continue DIR: finished members are kept, the others resume from their "
                        "last checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an experiment value (keep_best=3) or, prefixed with base., a "
                        "value of the base calibration config (base.training.steps=50)")
    p.add_argument("--address", default=None,
                   help="Ray cluster (local, auto, ray://host:port; default: the base config's)")
    p.add_argument("--skip-ensemble", action="store_true",
                   help="train only: no inference, ensemble or scores")
    p.add_argument("--ensemble-only", action="store_true",
                   help="no training: (re)build the ensemble and scores from finished members")
    p.add_argument("--dry-run", action="store_true", help="validate, print the grid, and exit")
    p.add_argument("--tensorboard", metavar="DIR", default=None,
                   help="also log each member's metrics to TensorBoard in DIR/<set>/m<seed> "
                        "(a local directory; needs the [tracking] extra)")
    p.add_argument("--force", action="store_true",
                   help="take over a stale lease on DIR (its driver was killed); a live "
                        "experiment's lease is never taken")
    p.add_argument("--out-storage-options", default="{}", help="JSON fsspec options for DIR")


def run(args) -> int:
    # The driver applies optimizer updates only: keep it on the CPU (workers get their own
    # platform through the runtime environment).
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # imported here: after JAX_PLATFORMS is set above, and to keep `differland --help` light
    from differland_dist.data.store import parse_storage_options
    from differland_dist.experiment import load_grid, run_experiment

    if args.skip_ensemble and args.ensemble_only:
        raise DifferlandError("--skip-ensemble and --ensemble-only exclude each other")
    oso = parse_storage_options(args.out_storage_options)
    grid = load_grid(args.config, args.overrides)
    if args.dry_run:
        print(f"experiment {grid.name}: {len(grid.predictor_sets)} predictor sets x "
              f"{len(grid.seeds)} members = {len(grid.members)} calibrations, keep best "
              f"{grid.keep_best} per set; each member {grid.resources.workers} worker(s) x "
              f"{grid.resources.cpus_per_worker:g} CPU, {grid.resources.gpus_per_worker:g} GPU")
        for s in grid.predictor_sets:
            print(f"  {s.name}" + (f"  (set: {', '.join(s.overrides)})" if s.overrides else ""))
        return 0
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # members log their own steps; the experiment prints one line per member instead
        logging.getLogger("differland_dist.distributed").setLevel(logging.WARNING)
        logging.getLogger("differland_dist.inference").setLevel(logging.WARNING)
        logging.getLogger("differland_dist.evaluation").setLevel(logging.WARNING)
    res = run_experiment(grid, args.out, resume=args.resume, out_storage_options=oso,
                         address=args.address, train=not args.ensemble_only,
                         ensemble=False if args.skip_ensemble else None, force=args.force,
                         tensorboard=args.tensorboard)
    run_ = res.run
    print(f"members: {len(run_.by_state('done'))} done, {len(run_.failed)} failed of "
          f"{len(run_.members)}")
    for m in run_.failed:
        print(f"  failed {m.key}: {m.error}")
    for s, keys in res.kept.items():
        print(f"  {s}: kept {', '.join(k.split('/')[-1] for k in keys) or 'none'}")
    for s, per in res.scores.items():
        line = []
        for st in sorted(per):
            c = per[st]["test"]["flat"]["nse"]
            if c["ensemble"] is not None:
                line.append(f"{st} {c['ensemble']:.3f}")
        if line:
            print(f"  test NSE (ensemble mean) {s}: " + ", ".join(line))
    print(f"experiment directory: {args.out}")
    return 1 if run_.failed and not run_.by_state("done") else 0
