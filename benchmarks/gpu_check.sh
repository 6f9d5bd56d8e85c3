#!/usr/bin/env bash
# The GPU check of issue 28: one command, under 8 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # on a machine with one GPU
#   bash benchmarks/gpu_check.sh --smoke [OUT_DIR]  # the same steps on the CPU, tiny sizes
#
# Prints, and writes as JSON under OUT_DIR (default benchmarks/results/gpu_check):
#   1. `differland verify` on the device (the golden files; exit 1 beyond tolerance)
#   2. the kernel's saturation curve: loss + gradient pixel-months/s for growing calls
#   3. a worker's share of the kernel at the paper's call size (one update of 320 pixels
#      x 276 months, one worker): the kernel's time over the update's
#   4. the paper-protocol update rate with training.updates_per_call K = 1 and 32
#   5. the paper grid's projected time (140 members x 193,000 updates, one member per device,
#      16 devices and one) from the fastest update rate
# Expected output: docs/benchmarks.md, "GPU check". Batched members (several members per
# device) are not a training mode yet, so the projection holds one member per device.
set -euo pipefail

SMOKE=0
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; shift; fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/results/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"

if [[ $SMOKE == 1 ]]; then
  export JAX_PLATFORMS=cpu
  PLATFORM=cpu
  CURVE="64 128"; MONTHS=24; REPEATS=2
  UPDATE_ARGS=(--resolution 15 --years 2 --steps 6 --k 1 3 --patches-per-step 2 --pixels-per-call 16)
else
  export JAX_PLATFORMS=cuda
  PLATFORM=cuda
  CURVE="2048 8192 32768 131072 262144"; MONTHS=276; REPEATS=5
  UPDATE_ARGS=(--resolution 5 --years 23 --steps 200 --k 1 32 --gpu)
fi

t0=$(date +%s)
echo "== 1. differland verify on $PLATFORM"
"$PY" -m differland_dist.cli.main verify | tee "$OUT/verify.txt"

echo "== 2. kernel saturation curve (loss + gradient, $MONTHS months)"
: > "$OUT/saturation.jsonl"
for p in $CURVE; do
  "$PY" -m differland_dist.cli.main bench --pixels "$p" --months "$MONTHS" --repeats "$REPEATS" --json \
    | tee -a "$OUT/saturation.jsonl"
done

echo "== 3-5. a worker's share of the kernel, update rate with K updates per call, grid projection"
"$PY" "$HERE/bench_update_cost.py" "${UPDATE_ARGS[@]}" --out "$OUT/update_cost.jsonl" \
  | tee "$OUT/update_cost.log" | grep '^{'

"$PY" - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
curve = [json.loads(l) for l in open(f"{out}/saturation.jsonl") if l.strip()]
rows = [json.loads(l) for l in open(f"{out}/update_cost.jsonl") if l.strip()]
s = rows[-1]
print("== summary")
print("saturation (pixels: loss+gradient pixel-months/s):",
      ", ".join(f"{c['pixels']}: {c['grad_pixel_months_per_s']:.3g}" for c in curve))
print(f"one update of {s['rows_per_call']} pixels x {s['months']} months: kernel {s['kernel_s'] * 1e3:.2f} ms;"
      f" worker's share of the kernel (K=1) {s['worker_share_of_kernel_k1']:.2f}")
for k, v in s["updates_per_s"].items():
    print(f"  updates_per_call {k}: {v} updates/s, {s['update_vs_kernel_k' + str(k)]}x the kernel")
p = s["projection"]
print(f"paper grid: {p['members']} members x {p['updates_per_member']} updates, {p['member_h']} h a member;"
      f" {p['devices']} devices: {p['waves']} waves, {p['grid_h']} h; one device: {p['grid_h_one_device']} h")
json.dump({"saturation": curve, "update": s}, open(f"{out}/summary.json", "w"), indent=1)
EOF
echo "gpu_check: done in $(( $(date +%s) - t0 )) s"
