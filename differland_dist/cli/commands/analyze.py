"""``differland analyze``: the paper's findings computed for an experiment directory."""

from __future__ import annotations

import os

from differland_dist.errors import DifferlandError

NAME = "analyze"
HELP = "analyse an experiment: generalisation, PFT vs environment, gradients, SHAP, uncertainty"
DESCRIPTION = (HELP + ". Reads EXPERIMENT_DIR (path or gs://, s3:// URL) written by `differland "
               "experiment` and writes analysis/ (JSON, zarr, report.md, figures/). On a synthetic "
               "store it also writes identifiability.json and truth_check.json (docs/analysis.md).")


def add_arguments(p):
    p.add_argument("experiment", metavar="EXPERIMENT_DIR", help="experiment directory (path or URL)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (default: EXPERIMENT_DIR/analysis)")
    p.add_argument("--sets", nargs="+", default=None, metavar="SET",
                   help="predictor sets to analyse (default: every set with kept members)")
    p.add_argument("--params", nargs="+", default=None, metavar="PARAM",
                   help="parameters to analyse (default: all 40)")
    p.add_argument("--shap-pixels", type=int, default=200, help="pixels explained by SHAP (default 200)")
    p.add_argument("--shap-background", type=int, default=50, help="SHAP background sample (default 50)")
    p.add_argument("--shap-nsamples", type=int, default=512,
                   help="Kernel SHAP coalitions per pixel (default 512)")
    p.add_argument("--shap-chunk", type=int, default=50, help="pixels per Ray task (default 50)")
    p.add_argument("--local", action="store_true", help="compute SHAP in this process, not as Ray tasks")
    p.add_argument("--address", default=None, help="Ray cluster for the SHAP tasks (default: a local one)")
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

    if args.bootstrap < 0:
        raise DifferlandError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.partition_iterations < 1:
        raise DifferlandError(f"--partition-iterations must be >= 1, got {args.partition_iterations}")
    so = parse_storage_options(args.storage_options)
    oso = parse_storage_options(args.out_storage_options, "--out-storage-options") \
        if args.out_storage_options else None
    opts = ShapOptions(background=args.shap_background, pixels=args.shap_pixels,
                       nsamples=args.shap_nsamples, chunk=args.shap_chunk,
                       executor="local" if args.local else "ray", address=args.address)
    s = run_analysis(args.experiment, args.out, sets=args.sets, params=args.params,
                     storage_options=so, out_storage_options=oso, shap=opts,
                     partition_max_iter=args.partition_iterations, figures=not args.no_figures,
                     bootstrap=args.bootstrap)
    vp = s["variance_partition"]["summary"]
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
    print(f"analysis: {args.out or args.experiment.rstrip('/') + '/analysis'}")
    return 0
