#!/bin/bash
# crs's PPO step against TRL 1.12's experimental PPOTrainer in one sitting, alternating:
#   bash benchmarks/ppo_vs_trl.sh TRL_PYTHON MODEL_DIR [ROUNDS]
# TRL_PYTHON: a python with trl==1.12.0 (see ../shared/bench/README.md for its venv);
# MODEL_DIR: SmolLM2-135M-Instruct as safetensors (crs's cache of the embedded model is
# ~/.cache/crs/models/smollm2-135m-instruct). TRL_BENCH: its trl_ppo_bench.py.
# Prints each run's figures; this machine drifts, so compare medians of the same sitting.
set -euo pipefail
TRL_PYTHON=$1; MODEL_DIR=$2; ROUNDS=${3:-3}
TRL_BENCH=${TRL_BENCH:-../shared/bench/trl_ppo_bench.py}
OUT=$(mktemp -d)
for round in $(seq 1 "$ROUNDS"); do
  for dtype in fp32 bf16; do
    echo "== round $round $dtype: crs"
    .venv/bin/python benchmarks/ppo_step.py --dtypes "$dtype" --steps 3 --warmup 1 2>/dev/null | grep -E "^(fp32|bf16) "
    echo "== round $round $dtype: TRL 1.12"
    BF16=$([ "$dtype" = bf16 ] && echo 1 || echo 0) MODEL="$MODEL_DIR" OUT="$OUT/trl" STEPS=4 \
      "$TRL_PYTHON" "$TRL_BENCH" 2>/dev/null | grep TRL112_PPO
  done
done
rm -rf "$OUT"
