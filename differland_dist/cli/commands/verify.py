"""``differland verify``: parity of this installation with the published model."""

from __future__ import annotations

import json

from differland_dist.cli import flags

NAME = "verify"
HELP = "check the model on golden files (embedded, or --golden FILE ...); exit 1 beyond tolerance"
DESCRIPTION = (HELP + ". Errors are printed as fractions of the spec tolerance: <= 1 passes "
               "(outputs rtol 1e-4 + atol 1e-5 x scale; loss rtol 1e-4; gradients 1e-3 of the "
               "largest component).")


def add_arguments(p):
    flags.add_list(p, "--golden", default=None, metavar="FILE",
                   help="golden .npz files in the published golden layout (default: the embedded set)")
    flags.add_json(p)


def run(args) -> int:
    # imported here: keeps `differland --help` and light commands from importing JAX/Ray/matplotlib
    import jax

    from differland_dist.selfcheck.verify import embedded_golden_files, verify_file

    files = args.golden or embedded_golden_files()
    if args.json:
        results = [verify_file(f) for f in files]
        print(json.dumps({"device": jax.devices()[0].platform,
                          "passed": bool(all(r.passed for r in results)),
                          "files": [{"name": r.name, "pixels": r.pixels, "steps": r.steps,
                                     "outputs": r.outputs, "final_pools": r.final_pools,
                                     "loss": r.loss, "gradients": r.gradients,
                                     "passed": bool(r.passed), "worst_output": r.worst_output}
                                    for r in results]}, default=float))
        return 0 if all(r.passed for r in results) else 1
    print(f"device: {jax.devices()[0].platform} ({jax.devices()[0].device_kind})")
    print(f"{'file':32s} {'pixels x steps':>15s} {'outputs':>9s} {'pools':>9s} {'loss':>9s} {'grads':>9s}  result")
    ok = True
    for f in files:
        r = verify_file(f)
        ok &= r.passed
        print(f"{r.name:32s} {f'{r.pixels} x {r.steps}':>15s} {r.outputs:9.3g} {r.final_pools:9.3g} "
              f"{r.loss:9.3g} {r.gradients:9.3g}  {'PASS' if r.passed else 'FAIL'}"
              + ("" if r.passed else f" (worst output: {r.worst_output})"))
    print("all within tolerance" if ok else "FAILED: beyond the spec's tolerance")
    return 0 if ok else 1
