"""``differland experiment``: a predictor-set × ensemble grid of calibrations on one Ray cluster."""

from __future__ import annotations

import json
import logging
import os
import sys

from differland_dist.cli import flags
from differland_dist.errors import DifferlandError

NAME = "experiment"
HELP = "train a grid of predictor sets x ensemble members on Ray, then ensemble and score it"
DESCRIPTION = (HELP + ". DIR (path or gs://, s3:// URL) receives experiment.yaml, experiment.jsonl, "
               "members/<set>/m<seed>/ run directories, ensemble.zarr, scores.json/.md and "
               "figures/. Rerun with --resume to finish what is unfinished. Exits 1 when any member failed "
               "(each is named, with its error), after the ensemble of the others is built.")


def add_arguments(p):
    p.add_argument("config", metavar="EXPERIMENT_CONFIG",
                   help="experiment grid config (YAML: a base calibration config plus predictor "
                        "sets x seeds, selection and ensemble), e.g. configs/experiment_demo.yaml; "
                        "not a calibration config (that is `differland calibrate`'s)")
    p.add_argument("--out", required=True, metavar="DIR", help="experiment directory (path or URL)")
    p.add_argument("--resume", action="store_true",
                   help="continue DIR: finished members are kept, the others resume from their "
                        "last checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an experiment value (keep_best=3) or, prefixed with base., a "
                        "value of the base calibration config (base.training.steps=50)")
    flags.add_address(p, default_text="the base config's ray.address")
    p.add_argument("--skip-ensemble", action="store_true",
                   help="train only: no inference, ensemble or scores")
    p.add_argument("--ensemble-only", action="store_true",
                   help="no training: (re)build the ensemble and scores from finished members")
    p.add_argument("--dry-run", action="store_true", help="validate, print the grid, and exit")
    p.add_argument("--tensorboard", metavar="DIR", default=None,
                   help="also log each member's metrics to TensorBoard in DIR/<set>/m<seed> "
                        "(a local directory; needs the [tracking] extra)")
    p.add_argument("--mlflow", metavar="TRACKING_URI", default=None,
                   help="also log each member's config and metrics to MLflow, one run per member "
                        "named <set>/m<seed> in the MLflow experiment of the grid's name: a "
                        "tracking server (http://host:5000), sqlite:///mlflow.db or "
                        "file:./mlruns (needs the [mlflow] extra)")
    p.add_argument("--force", action="store_true",
                   help="take over a stale lease on DIR (its driver was killed); a live "
                        "experiment's lease is never taken")
    p.add_argument("--out-storage-options", default="{}", help="JSON fsspec options for DIR")
    flags.add_progress(p, what="progress lines of the grid and its running members")
    flags.add_json(p)


def run(args) -> int:
    # The driver applies optimizer updates only: keep it on the CPU (workers get their own
    # platform through the runtime environment).
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # imported here: after JAX_PLATFORMS is set above, and to keep `differland --help` light
    from differland_dist.data.store import parse_storage_options
    from differland_dist.experiment import load_grid, run_experiment
    from differland_dist.storage.location import Location

    if args.skip_ensemble and args.ensemble_only:
        raise DifferlandError("--skip-ensemble and --ensemble-only exclude each other")
    out = Location(args.out, parse_storage_options(args.out_storage_options))
    grid = load_grid(args.config, args.overrides)
    if args.dry_run:
        if args.json:
            print(json.dumps({"experiment": grid.name, "members": len(grid.members),
                              "predictor_sets": [s.name for s in grid.predictor_sets],
                              "seeds": list(grid.seeds), "keep_best": grid.keep_best}))
            return 0
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
    res = run_experiment(grid, out, resume=args.resume, address=args.address,
                         train=not args.ensemble_only,
                         ensemble=False if args.skip_ensemble else None, force=args.force,
                         tensorboard=args.tensorboard, mlflow=args.mlflow)
    run_ = res.run
    rc = 1 if run_.failed else 0
    if run_.failed:  # on stderr too, so a batch log names them even with --json
        print(f"error: {len(run_.failed)} of {len(run_.members)} member(s) failed: "
              + ", ".join(m.key for m in run_.failed), file=sys.stderr)
    if args.json:
        print(json.dumps({"experiment": args.out, "members": len(run_.members),
                          "done": [m.key for m in run_.by_state("done")],
                          "failed": [{"member": m.key, "error": m.error} for m in run_.failed],
                          "kept": res.kept, "scores": res.scores}, default=str))
        return rc
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
    return rc
