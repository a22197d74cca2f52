"""A LoRA run in moduletune's engine against the same LoRA made by peft's get_peft_model and trained by the stock
Hugging Face Trainer: same rows, same modules, rank, alpha and lr; training examples/s and their ratio in one run.

    python -m bench.peft_vs_moduletune --task sst2 --modules lora:Q+V --max-train 2000

The Trainer side is bench/trainer_vs_moduletune.py's (run_glue's way: every example padded to 128 tokens, fp32);
only the model's wrapping differs: peft's PeftModel with the task head in modules_to_save, as peft's docs train one.
A benchmark, not a test: one line per runner, then the ratio; with --json a last line of JSON.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.common import environment, fresh_home, json_line, parse_variants, resolve_device
from bench.trainer_vs_moduletune import log, parse_args, run_moduletune, run_trainer
from moduletune.tuning import glue, methods, modules


def peft_wrap(model, variant, seed: int):
    """The variant's LoRA or (IA)³ made the stock peft way: get_peft_model over the same modules (model, trainable)."""
    from peft import TaskType, get_peft_model

    method, targets, feedforward = modules.adapter_targets(model, variant.families, variant.layers)
    adapter = methods.peft_config(method, targets, feedforward, methods.AdapterSettings())
    adapter.task_type = TaskType.SEQ_CLS  # peft then trains and saves the classifier head (modules_to_save)
    wrapped = get_peft_model(model, adapter)
    return wrapped, sum(p.numel() for p in wrapped.parameters() if p.requires_grad)


def main(argv=None) -> int:
    import transformers.trainer  # noqa: F401  (imports outside the rows' wall time)
    from transformers.utils import logging as hf_logging

    args = parse_args(["--modules", "lora:Q+V", *(sys.argv[1:] if argv is None else argv)])
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    task = glue.get_task(args.task)
    variant = parse_variants(args.modules)[0]
    if methods.method_of(variant.families[0]) is None:
        raise SystemExit(f"--modules must be a method, e.g. lora:Q+V or ia3, got {args.modules}")
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-pvm-") as tmp, fresh_home(args.home):
        log(f"peft + Trainer: {variant.label}")
        peft_row = run_trainer(args, task, args.model, variant, False, device, Path(tmp), wrap=peft_wrap)
        log(f"moduletune: {variant.label}")
        ours = run_moduletune(args, task, args.model, variant, device, args.prefix_caches[0])
    ratio = ours["examples_per_second"] / peft_row["examples_per_second"]
    for name, row in (("peft + Trainer", peft_row), ("moduletune", ours)):
        print(
            f"{name:15} {variant.label}: {row['examples_per_second']:8.1f} examples/s, {row['train_seconds']:.1f}s "
            f"training, {row['trainable_params']:,} trainable, {row['metric_name']} {row['metric']:.3f}"
        )
    print(f"moduletune / peft + Trainer: {ratio:.2f}x examples/s on {device}")
    if args.json:
        print(json_line({"environment": environment(device), "rows": [peft_row, ours], "ratio": ratio}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
