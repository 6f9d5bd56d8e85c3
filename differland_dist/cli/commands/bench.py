"""``differland bench``: pixel-months per second of the forward rollout and loss+gradient."""

from __future__ import annotations

import json

from differland_dist.cli import flags
from differland_dist.errors import DifferlandError

NAME = "bench"
HELP = "time the forward rollout and the loss with its gradient on synthetic forcing"


def add_arguments(p):
    p.add_argument("--pixels", type=int, default=2048, help="pixels per batch (default 2048)")
    p.add_argument("--months", type=int, default=276, help="monthly steps (default 276)")
    p.add_argument("--repeats", type=int, default=11, help="timed repeats after compilation")
    p.add_argument("--checkpoint-every", type=int, default=-1,
                   help="scan segment for rematerialisation: -1 auto (~sqrt(T)), 0 none")
    p.add_argument("--unroll", type=int, default=1, help="time steps unrolled per loop iteration")
    p.add_argument("--pixel-block", type=int, default=0,
                   help="pixels rolled out together in blocks (0: all at once; -1: 256 on CPU)")
    flags.add_json(p)
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="on a CPU, expose this many host devices and split the pixels across "
                        "them (default: one per core)")


def run(args) -> int:
    # imported here: keeps `differland --help` and light commands (and XLA_FLAGS is set before, cli/main.py) from importing JAX/Ray/matplotlib
    from differland_dist.selfcheck.bench import as_dict, run_bench

    if args.pixels < 1 or args.months < 12:
        raise DifferlandError(f"--pixels must be >= 1 and --months >= 12, got {args.pixels}, {args.months}")
    r = run_bench(args.pixels, args.months, args.repeats, checkpoint_every=args.checkpoint_every,
                  unroll=args.unroll, pixel_block=args.pixel_block)
    if args.json:
        print(json.dumps(as_dict(r)))
    else:
        print(f"device: {r.device}; {r.pixels} pixels x {r.months} months; medians of {r.repeats}")
        print(f"forward (44 outputs):  {r.forward_pixel_months_per_s:12.4g} pixel-months/s ({r.forward_s_median * 1e3:.1f} ms)"
              "  [named (T, P) series]")
        print(f"  as one (P, T, 44):   {r.forward_published_layout_pixel_months_per_s:12.4g} pixel-months/s "
              f"({r.forward_published_layout_s_median * 1e3:.1f} ms)  [the published layout]")
        print(f"loss + gradient:       {r.grad_pixel_months_per_s:12.4g} pixel-months/s ({r.grad_s_median * 1e3:.1f} ms)")
        if r.grad_temp_bytes is not None:
            print(f"gradient temp memory:  {r.grad_temp_bytes / 2**20:.1f} MiB")
        print(f"compilation:           {r.compile_s:.1f} s")
    return 0
