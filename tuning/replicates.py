"""Which runs are replicates: two runs may be pooled only when their settings differ in the seed alone.

A number shown is a claim a researcher will cite, so every table and chart groups runs by
replicate_key (every setting except the seed and the knobs that only change how a run executes,
not what it computes) and by comparison_key (the same, less what a comparison varies on purpose:
modules, layers and the learning rate) to find the full fine-tuning reference at the same settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

# How a run executes, not what it computes: evaluating more often, checkpointing, compiling, CUDA
# graphs, where the GLUE files lie, free-form notes and experiment trackers leave the trained weights the same.
EXECUTION_ONLY = (
    "seed",
    "eval_batch_size",
    "eval_every",
    "checkpoint_every",
    "compile",
    "cuda_graphs",
    "glue_dir",
    "extra",
    "report_to",  # where the curves are also logged
)
# A LoRA's shape: part of a LoRA run's experiment, nothing of any other run's (and absent from runs made before it).
ADAPTER_SETTINGS = ("lora_rank", "lora_alpha", "lora_dropout")
# What a comparison varies on purpose (full fine-tuning's reference is found across these).
COMPARED = ("modules", "layers", "lr", "lr_grid", "lr_search", *ADAPTER_SETTINGS)


def replicate_settings(config: Mapping, lr: float | None = None) -> dict:
    """The settings that make two runs the same experiment; lr=None in the config becomes `lr` (the effective one)."""
    out = {k: v for k, v in config.items() if k not in EXECUTION_ONLY}
    if out.get("lr") is None and lr is not None:
        out["lr"] = float(lr)
    # The frozen-prefix cache changes nothing unless it is forced on (then frozen layers run without dropout).
    if out.get("prefix_cache", "auto") != "on":
        out.pop("prefix_cache", None)
    if isinstance(out.get("modules"), (list, tuple)):
        out["modules"] = "+".join(out["modules"])
    if not str(out.get("modules", "")).startswith("lora:"):
        for name in ADAPTER_SETTINGS:
            out.pop(name, None)
    return out


def _digest(settings: Mapping) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def replicate_key(config: Mapping, lr: float | None = None) -> str:
    """A short stable id of replicate_settings: equal keys pool over seeds."""
    return _digest(replicate_settings(config, lr))


def comparison_key(config: Mapping, lr: float | None = None) -> str:
    """replicate_key without modules, layers and lr: runs that a table compares side by side."""
    settings = replicate_settings(config, lr)
    return _digest({k: v for k, v in settings.items() if k not in COMPARED})


def differing_settings(settings: list[Mapping], ignore=("task",)) -> list[str]:
    """The setting names whose values differ among these runs (what a chart that mixes them must say)."""
    keys = sorted({k for s in settings for k in s} - set(ignore))
    missing = object()
    return [
        k
        for k in keys
        if len(
            {
                json.dumps(
                    s.get(k, missing) if s.get(k, missing) is not missing else "<unset>", sort_keys=True, default=str
                )
                for s in settings
            }
        )
        > 1
    ]
