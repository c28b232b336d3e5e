#!/usr/bin/env bash
# The GPU figures in one command, for a session that is lent a CUDA machine (about 8 minutes):
#   1. trajectory scoring throughput, ours against the official batch-1 loop, per model size;
#   2. the main job (`s2l run`) at the gpu scale's sizes: 100K embedded rows, proxy-large,
#      target-large, S2L at a 10% budget;
#   3. the target again on a random sample of the same budget and seed: one S2L-versus-random
#      pair (one seed: a reading, not an effect).
# Everything lands under OUT (default data/gpu_check): logs, each step's JSON summary, and
# summary.md with the figures side by side.
#
#   benchmarks/gpu_check.sh [OUT]
#   S2L_GPU_CHECK_SMOKE=1 benchmarks/gpu_check.sh OUT   # the same steps at the tiny scale, on CPU
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${1:-data/gpu_check}" && cd "${1:-data/gpu_check}" && pwd)
PY=${PYTHON:-.venv/bin/python}
S2L=$(dirname "$PY")/s2l
export DAGSTER_HOME="$OUT/dagster" S2L_ARTIFACT_ROOT="$OUT/artifacts" S2L_DATA_DIR="$OUT/data"
export MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db"
mkdir -p "$DAGSTER_HOME"

if [[ -n "${S2L_GPU_CHECK_SMOKE:-}" ]]; then
  ROWS=200 REF=40 SIZES=proxy-tiny PROFILE=tiny BOUND=600
  cat > "$OUT/scale.yaml" <<'YAML'
ops:
  selected_subset: {config: {budget: "0.1"}}
YAML
else
  ROWS=20000 REF=1000 SIZES=proxy-large,target-large,pythia-70m PROFILE=default BOUND=330
  cat > "$OUT/scale.yaml" <<'YAML'
ops:
  raw_dataset: {config: {embedded: {size: 100000}}}
  proxy_checkpoints: {config: {size: proxy-large, batch_size: 128}}
  selected_subset: {config: {budget: "0.1"}}
  target_model: {config: {size: target-large, batch_size: 128}}
YAML
fi

"$PY" - > "$OUT/device.txt" <<'EOF'
import torch
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA device)")
EOF
echo "device: $(cat "$OUT/device.txt")"

start=$SECONDS
timeout 150 "$PY" benchmarks/trajectory_throughput.py --rows "$ROWS" --reference-rows "$REF" \
  --sizes "$SIZES" | tee "$OUT/throughput.txt"
echo "throughput: $((SECONDS - start)) s"

run() {  # one s2l run; its JSON summary (last stdout line) into $OUT/$1.json
  local name=$1; shift
  local t0=$SECONDS
  timeout "$BOUND" "$S2L" run --profile "$PROFILE" --config "$OUT/scale.yaml" "$@" \
    > "$OUT/$name.out" 2> "$OUT/$name.log" || { tail -20 "$OUT/$name.log"; exit 1; }
  tail -1 "$OUT/$name.out" > "$OUT/$name.json"
  echo "$name: $((SECONDS - t0)) s"
}
run selected --method s2l
run random --training-set random

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
sel, rnd = (json.loads((out / f"{n}.json").read_text()) for n in ("selected", "random"))
keys = [k for k in sel if k.endswith(("_accuracy", "_nll")) and k in rnd]
lines = [
    f"# GPU check on {(out / 'device.txt').read_text().strip()}",
    "",
    "## Scoring throughput (ours against the official batch-1 loop)",
    "",
    "```",
    (out / "throughput.txt").read_text().strip(),
    "```",
    "",
    f"## One S2L-versus-random pair ({sel['examples']} examples, one seed: a reading)",
    "",
    "| metric | S2L subset | random subset | S2L - random |",
    "|---|---:|---:|---:|",
    *(f"| {k} | {sel[k]:.4f} | {rnd[k]:.4f} | {sel[k] - rnd[k]:+.4f} |" for k in keys),
    "",
    f"subset: {sel['subset']}",
]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "gpu check: $((SECONDS - start)) s in all; $OUT/summary.md"
