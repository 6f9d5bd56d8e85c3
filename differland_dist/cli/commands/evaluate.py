"""``differland evaluate RUN_OR_OUTPUT``: metrics per observation stream, recovery, figures."""

from __future__ import annotations

import argparse
import json
import logging

from differland_dist.cli import flags

NAME = "evaluate"
HELP = "score a run or an inference output against every observation stream; figures"
DESCRIPTION = (
    "Evaluate an inference output store, or a run directory (inference into "
    "RUN_DIR/inference.zarr first if it is missing or partial). For every observation stream, "
    "on training and held-out patches: NSE, KGE, R², RMSE, MAE, bias, r and n, flat, spatial "
    "and temporal, warm-up excluded; parameter recovery on synthetic stores. For gridded "
    "outputs also global annual totals (PgC/yr of gpp, nee, nbe, fire), zonal means and "
    "per-pixel skill maps (NSE, KGE, r, bias). Writes evaluation.json, evaluation.md, "
    "evaluation.zarr and figures/*.png.")

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    # imported here: keeps `differland --help` and light commands from importing JAX/Ray/matplotlib
    from differland_dist.evaluation.options import DEFAULT_MAP_PARAMS

    p.add_argument("target", metavar="RUN_OR_OUTPUT",
                   help="run directory or inference output store (local path or URL)")
    p.add_argument("--store", metavar="URL", default=None,
                   help="input store with the observations (default: the output's source store)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="results directory (default: RUN_DIR/evaluation, or <output>_evaluation)")
    flags.add_list(p, "--map-params", default=list(DEFAULT_MAP_PARAMS), metavar="PARAM",
                   help="parameters to map")
    p.add_argument("--series-pixels", type=int, default=4, metavar="N",
                   help="held-out pixels whose series are plotted (default 4)")
    p.add_argument("--block-pixels", type=int, default=4096, metavar="N",
                   help="pixels read per block (default 4096)")
    p.add_argument("--no-figures", action="store_true", help="metrics only")
    p.add_argument("--conventions", choices=("paper",), default=None,
                   help="also score as the paper's evaluate_performance.py (24-month warm-up, "
                        "patch water anomalies, slope/intercept, temporal NSE mean/median/std), "
                        "reported beside ours, and its per-pixel skill maps (monthly, annual and "
                        "anomaly r and RMSE, trends and p-values; nbe on 4x5 degrees) in "
                        "evaluation.zarr")
    flags.add_executor(p, what="where inference runs for a run directory without output")
    flags.add_address(p, default_text="start a local Ray or join RAY_ADDRESS")
    p.add_argument("--max-actors", type=int, default=2, metavar="N",
                   help="actor pool maximum for that inference (default 2)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, metavar="N",
                   help="GPUs per actor for that inference (default 0)")
    p.add_argument("--storage-options", metavar="JSON", default=None,
                   help="fsspec options (JSON) for the input store (and the default for "
                        "--out-storage-options)")
    p.add_argument("--out-storage-options", metavar="JSON", default=None,
                   help="fsspec options (JSON) for the run directory or output store, the results "
                        "and the output's own input store when --store is not given "
                        "(default: --storage-options)")
    flags.add_progress(p, what="progress lines of that inference")
    flags.add_json(p)


def run(args: argparse.Namespace) -> int:
    # imported here: keeps `differland --help` and light commands from importing JAX/Ray/matplotlib
    from differland_dist.data.store import parse_storage_options
    from differland_dist.evaluation.evaluate import EvaluationOptions, evaluate
    from differland_dist.inference.pipeline import InferenceOptions
    from differland_dist.storage.location import Location

    so = parse_storage_options(args.storage_options) if args.storage_options else None
    oso = parse_storage_options(args.out_storage_options) if args.out_storage_options else None
    options = EvaluationOptions(
        block_pixels=args.block_pixels,
        map_params=tuple(flags.split_list(args.map_params)),
        n_series_pixels=args.series_pixels, figures=not args.no_figures,
        conventions=args.conventions)
    inference = InferenceOptions(executor=args.executor, max_actors=args.max_actors,
                                 gpus_per_actor=args.gpus_per_actor, address=args.address)
    oso = so if oso is None else oso
    r = evaluate(Location(args.target, oso),
                 store=None if args.store is None else Location(args.store, so),
                 out=None if args.out is None else Location(args.out, oso), options=options,
                 inference=inference)
    if args.json:
        print(json.dumps(r, default=str))
        return 0
    print(f"evaluation of {r['output']} -> {r['out_dir']}/evaluation.md")
    print("flat scores by split (train: fitted; dev: model selection; test: never trained on "
          "or selected by)")
    print(f"{'stream':10s} {'n test':>8s} {'NSE test':>9s} {'r test':>7s} {'n dev':>7s} {'NSE dev':>8s} "
          f"{'n train':>8s} {'NSE train':>9s}")
    for name, s in r["streams"].items():
        te, dv, tr = s["test"]["flat"], s["dev"]["flat"], s["train"]["flat"]
        print(f"{name:10s} {te['n']:8d} {te['nse']:9.3g} {te['r']:7.3g} {dv['n']:7d} {dv['nse']:8.3g} "
              f"{tr['n']:8d} {tr['nse']:9.3g}" + (f"  ({s['note']})" if s.get("note") else ""))
    gt = r.get("global_totals")
    if gt:
        print("global totals, PgC/yr (mean of the years after warm-up): " + ", ".join(
            f"{k} {v:.4g}" for k, v in gt["mean_after_warm_up"].items()))
    rec = r.get("recovery")
    if rec:
        print(f"parameter recovery, test pixels: median R² {rec['test']['median_r2']:.3g} "
              f"(unbounded {rec['test']['median_r2_unbounded']:.3g})")
    return 0
