"""``differland cv-sites CONFIG --folds loo|k --out DIR``: leave-sites-out cross-validation
over the sites of a site store."""

from __future__ import annotations

import json
import os

from differland_dist.cli import flags

NAME = "cv-sites"
HELP = "leave-sites-out cross-validation over the sites of a site store (per-site NSE, median)"
DESCRIPTION = (
    "Cross-validate a calibration config over the sites of its site store (data.url; from "
    "differland import-sites or import-fluxnet): for each predictor combination and fold, "
    "train on the other sites and score the fold's sites on every year after the warm-up "
    "(monthly NSE of GPP, ET, NEE, LAI; observed months only). Writes cv_sites.json and "
    "cv_sites.md into --out; fold stores and runs go under --work and resume.")


def add_arguments(p):
    p.add_argument("config", metavar="CALIBRATION_CONFIG",
                   help="calibration config of a site store, e.g. configs/fluxnet_sites.yaml")
    p.add_argument("--folds", default="loo", metavar="loo|K",
                   help="loo (one site a fold, the default) or K folds (site i in fold i mod K)")
    flags.add_list(p, "--predictors", default=None, metavar="SETS",
                   help="predictor combinations to compare, each +-joined (PFT PFT+CLIM); "
                        "default: the config's data.predictors")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for cv_sites.json/.md")
    p.add_argument("--work", default=None, metavar="DIR",
                   help="fold stores and run directories (default: OUT/work)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.steps=500 (repeatable)")
    flags.add_address(p, default_text="the config's ray.address")
    flags.add_json(p)


def run(args) -> int:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the driver only applies updates
    from differland_dist.experiment.site_cv import (
        CVPlan, parse_folds, run_site_cv, set_name, write_cv)

    folds = parse_folds(args.folds)
    overrides = list(args.overrides) + ([f"ray.address={args.address}"] if args.address else [])
    sets = tuple(tuple(c.split("+")) for c in args.predictors or ())
    if not sets:
        from differland_dist.config import load_config

        sets = (tuple(load_config(args.config, overrides).data.predictors),)
    plan = CVPlan(config=args.config, overrides=tuple(overrides), predictor_sets=sets,
                  folds=folds, work=args.work or os.path.join(args.out, "work"))
    result = run_site_cv(plan)
    js, md = write_cv(result, args.out)
    medians = {name: r["median"] for name, r in result["sets"].items()}
    if args.json:
        print(json.dumps({"json": str(js), "markdown": str(md), "folds": result["folds"],
                          "median": medians}))
        return 0
    for name in (set_name(s) for s in sets):
        m = medians[name]
        print(f"{name}: median NSE " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()))
    print(f"wrote {js} and {md}")
    return 0
