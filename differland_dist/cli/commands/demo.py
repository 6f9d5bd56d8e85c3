"""``differland demo``: the main job on the embedded default (no download, no cloud)."""

from __future__ import annotations

import os

NAME = "demo"
HELP = "synthetic Earth -> calibration on a local 2-worker Ray cluster -> held-out report"


def add_arguments(p):
    p.add_argument("--out", default="demo_out", help="output directory (default ./demo_out)")
    p.add_argument("--resolution", type=float, default=5.0, help="grid spacing in degrees (default 5)")
    p.add_argument("--years", type=int, default=5, help="years of monthly forcing (default 5)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: configs/demo.yaml)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from differland_dist.demo import run_demo

    s = run_demo(args.out, args.resolution, args.years, args.steps, args.seed, args.workers,
                 progress=not args.no_progress)
    h = s["held_out"]
    print(f"\nheld-out pixels, untrained -> trained network ({s['steps']} steps, {s['workers']} workers):")
    print(f"  LAI RMSE {h['lai_untrained']['rmse']:.3f} -> {h['lai_trained']['rmse']:.3f} m2 m-2 "
          f"(NSE {h['lai_untrained']['nse']:.3f} -> {h['lai_trained']['nse']:.3f})")
    print(f"  GPP RMSE {h['gpp_untrained']['rmse']:.3f} -> {h['gpp_trained']['rmse']:.3f} gC m-2 d-1 "
          f"(NSE {h['gpp_untrained']['nse']:.3f} -> {h['gpp_trained']['nse']:.3f})")
    print(f"  learnt vs true field capacity on held-out pixels: r = {s['held_out_param_correlation_with_truth']:.3f}")
    print(f"report: {os.path.join(args.out, 'report.md')} ({s['seconds']['total']:.0f} s)")
    better = (h["lai_trained"]["rmse"] < h["lai_untrained"]["rmse"]
              and h["gpp_trained"]["rmse"] < h["gpp_untrained"]["rmse"])
    return 0 if better else 1
