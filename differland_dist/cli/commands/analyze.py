"""``differland analyze``: the paper's findings computed for an experiment directory."""

from __future__ import annotations

import json
import os

from differland_dist.cli import flags
from differland_dist.errors import DifferlandError

NAME = "analyze"
HELP = "analyse an experiment: generalisation, PFT vs environment, gradients, SHAP, uncertainty"
DESCRIPTION = (HELP + ". Reads EXPERIMENT_DIR (path or gs://, s3:// URL) written by `differland "
               "experiment` and writes analysis/ (JSON, zarr, report.md, figures/). On a synthetic "
               "store it also writes identifiability.json and truth_check.json (docs/analysis.md).")


def add_arguments(p):
    p.add_argument("experiment", metavar="EXPERIMENT_DIR", help="experiment directory (path or URL)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default: EXPERIMENT_DIR/analysis)")
    flags.add_list(p, "--sets", default=None, metavar="SET",
                   help="predictor sets to analyse (default: every set with kept members)")
    flags.add_list(p, "--params", default=None, metavar="PARAM",
                   help="parameters to analyse (default: all 40)")
    p.add_argument("--shap-pixels", type=int, default=200, help="pixels explained by SHAP (default 200)")
    p.add_argument("--shap-background", type=int, default=50, help="SHAP background sample (default 50)")
    p.add_argument("--shap-nsamples", type=int, default=512,
                   help="Kernel SHAP coalitions per pixel (default 512)")
    p.add_argument("--shap-chunk", type=int, default=50, help="pixels per Ray task (default 50)")
    p.add_argument("--shap-recipe", choices=("members", "paper"), default="members",
                   help="members: SHAP of each kept member in unbounded space (default); paper: "
                        "also the paper's recipe (ensemble mean, physical and derived targets, "
                        "1,000 train/dev pixels, PFT-conditional; reference defects fixed), "
                        "written to shap_paper.json (docs/paper.md)")
    flags.add_executor(p, what="where the SHAP tasks run")
    flags.add_deprecated(p, "--local", dest="executor", const="local", replacement="--executor local")
    flags.add_address(p, default_text="a local Ray started for the SHAP tasks")
    flags.add_progress(p, what="progress lines of the SHAP tasks")
    flags.add_json(p)
    p.add_argument("--partition-iterations", type=int, default=100,
                   help="boosting iterations of each variance-partition regression (default 100)")
    p.add_argument("--bootstrap", type=int, default=20, metavar="N",
                   help="resamples of the intervals over members and patches (default 20; 0: "
                        "none, every share then undecided; docs/analysis.md)")
    p.add_argument("--no-figures", action="store_true", help="JSON, zarr and report only")
    p.add_argument("--storage-options", default="{}", help="JSON fsspec options for EXPERIMENT_DIR")
    p.add_argument("--out-storage-options", default=None,
                   help="JSON fsspec options for --out (default: --storage-options)")


def run(args) -> int:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # imported here: after JAX_PLATFORMS is set above, and to keep `differland --help` light
    from differland_dist.analysis.pipeline import run_analysis
    from differland_dist.analysis.shap_values import ShapOptions
    from differland_dist.data.store import parse_storage_options
    from differland_dist.storage.location import Location, join

    if args.bootstrap < 0:
        raise DifferlandError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.partition_iterations < 1:
        raise DifferlandError(f"--partition-iterations must be >= 1, got {args.partition_iterations}")
    so = parse_storage_options(args.storage_options)
    oso = parse_storage_options(args.out_storage_options, "--out-storage-options") \
        if args.out_storage_options else None
    opts = ShapOptions(background=args.shap_background, pixels=args.shap_pixels,
                       nsamples=args.shap_nsamples, chunk=args.shap_chunk,
                       executor=args.executor, address=args.address)
    s = run_analysis(Location(args.experiment, so),
                     Location(args.out or join(args.experiment, "analysis"), so if oso is None else oso),
                     sets=args.sets, params=args.params, shap=opts,
                     partition_max_iter=args.partition_iterations, figures=not args.no_figures,
                     shap_recipe=args.shap_recipe, bootstrap=args.bootstrap)
    out = args.out or args.experiment.rstrip('/') + '/analysis'
    vp = s["variance_partition"]["summary"]
    if args.json:
        print(json.dumps({"analysis": out, "full_set": s["full_set"], "variance_partition": vp,
                          "gradients": s["gradients"]["components"],
                          "findings": s.get("findings"), "truth_check": s.get("truth_check")},
                         default=str))
        return 0
    print(f"full set {s['full_set']}: median pft_share {vp['median_pft_share']} over "
          f"{vp['n_explainable']} explainable parameter(s)")
    hl = s["findings"]["headline"]
    print(f"trusted: median pft_share {hl['median_pft_share']} {hl['interval']} over "
          f"{len(hl['over'])} parameter(s): {hl['decision']}")
    print("gradients: " + ", ".join(f"{c} {100 * v['explained']:.0f} % ({v['top_predictors'][0][0]})"
                                    for c, v in s["gradients"]["components"].items()))
    if s.get("truth_check"):
        for c in s["truth_check"]["criteria"]:
            print(f"  {'PASS' if c['passed'] else 'FAIL'} {c['name']}: {c['value']} (threshold {c['threshold']})")
    print(f"analysis: {out}")
    return 0
