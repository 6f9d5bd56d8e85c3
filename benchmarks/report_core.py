"""Render the core (issue 2) and calibration (issue 4) benchmark results as Markdown tables
for docs/benchmarks.md, from the JSON lines written by bench_core.py / bench_calibrate.py."""

import json
import sys
from pathlib import Path

R = Path(__file__).resolve().parent / "results"


def rows(name):
    p = R / name
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


def core_table(name):
    out = ["| device | pixels × months | forward, 44 named (T, P) series | forward, one (P, T, 44) array | loss + gradient | gradient temporaries |",
           "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows(name):
        if r["kind"] != "throughput":
            continue
        mem = f"{r['grad_temp_bytes'] / 2**20:.0f} MiB" if r.get("grad_temp_bytes") else "n/a"
        fwd, pub = r["forward_pixel_months_per_s"], r.get("forward_published_layout_pixel_months_per_s")
        if pub is None:  # results of the first version, whose forward was the (P, T, 44) one
            fwd, pub = None, fwd
        fwd = f"{fwd:.3g}" if fwd else "n/a"
        out.append(f"| {r['device']} | {r['pixels']} × {r['months']} | {fwd} | {pub:.3g} | "
                   f"{r['grad_pixel_months_per_s']:.3g} | {mem} |")
    return "\n".join(out)


def memory_table(name):
    out = ["| device | pixels × months | checkpointed scan | gradient temporaries | loss + gradient pixel-months/s |",
           "| --- | --- | --- | ---: | ---: |"]
    for r in rows(name):
        if r["kind"] != "memory":
            continue
        out.append(f"| {r['device']} | {r['pixels']} × {r['months']} | {'~sqrt(T) segments' if r['checkpoint_every'] == -1 else 'none'} | "
                   f"{r['grad_temp_bytes'] / 2**20:.0f} MiB | {r['grad_pixel_months_per_s']:.3g} |")
    return "\n".join(out)


def calibrate_table(name):
    out = ["| workers (1 core each) | pixel-months per step | step (s) | compute (s) | Ray communication (s) | driver (s) | pixel-months/s |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows(name):
        out.append(f"| {r['workers']} | {r['pixel_months_per_step']:.0f} | {r['step_s']:.3f} | {r['compute_s']:.3f} | "
                   f"{r['comm_s']:.3f} | {r['driver_s']:.4f} | {r['pixel_months_per_s']:.3g} |")
    return "\n".join(out)


if __name__ == "__main__":
    what = sys.argv[1]
    print({"core": core_table, "memory": memory_table, "calibrate": calibrate_table}[what](sys.argv[2]))
