"""``differland demo``: the main job on the embedded default (no download, no cloud):
synth -> calibrate -> infer -> evaluate, and a report of the held-out pixels."""

from __future__ import annotations

import json
import os

from differland_dist.cli import flags

NAME = "demo"
HELP = "synthetic Earth -> calibrate on local Ray -> infer -> evaluate -> held-out report"
DESCRIPTION = (
    "The commands a user runs one after another, on a synthetic Earth with known true "
    "parameters: differland synth, calibrate (a local Ray cluster), infer (trained and "
    "untrained network) and evaluate, then OUT/report.md with the held-out pixels' numbers "
    "from evaluate, GPP against the hidden truth and the learnt map of a parameter next to its "
    "true map. A rerun reuses every finished stage. The README lists every output file.")


def add_arguments(p):
    p.add_argument("--out", default="demo_out", help="output directory (default ./demo_out)")
    p.add_argument("--resolution", type=float, default=5.0, help="grid spacing in degrees (default 5)")
    p.add_argument("--years", type=int, default=5, help="years of monthly forcing (default 5)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: configs/demo.yaml)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    p.add_argument("--seed", type=int, default=0)
    flags.add_progress(p, what="progress bars and lines of each stage")
    flags.add_json(p)


def run(args) -> int:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # imported here: after JAX_PLATFORMS is set above, and to keep `differland --help` light
    from differland_dist.cli.demo import run_demo

    s = run_demo(args.out, args.resolution, args.years, args.steps, args.seed, args.workers,
                 progress=args.progress)
    h = s["held_out"]
    rmse = [h[k]["rmse"] for k in ("lai_untrained", "lai_trained", "gpp_untrained", "gpp_trained")]
    better = None not in rmse and rmse[1] < rmse[0] and rmse[3] < rmse[2]
    if args.json:
        print(json.dumps(s, default=str))
        return 0 if better else 1

    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    def change(key, what):
        u, t = h[f"{key}_untrained"], h[f"{key}_trained"]
        return (f"  {what} RMSE {f(u['rmse'])} -> {f(t['rmse'])} (NSE {f(u['nse'])} -> {f(t['nse'])})")

    print(f"\nheld-out pixels, untrained -> trained network ({s['steps']} steps, {s['workers']} workers):")
    print(change("lai", "LAI") + " m2 m-2, vs observations (differland evaluate)")
    print(change("gpp", "GPP") + " gC m-2 d-1, vs the hidden truth")
    print(f"  learnt vs true field capacity on held-out pixels: r = "
          f"{f(s['held_out_param_correlation_with_truth'])}")
    print(f"report: {os.path.join(args.out, 'report.md')} ({s['seconds']['total']:.0f} s); "
          f"evaluation: {os.path.join(args.out, 'evaluation', 'evaluation.md')}")
    return 0 if better else 1
