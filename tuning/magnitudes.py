"""Weight-magnitude statistics per module family and layer, and how far a tuned run moved each module.

The paper ties LayerNorm's transferability to its far larger |w|; these numbers let a user see it.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from moduletune.tuning import artifacts, glue, methods, modules
from moduletune.tuning.export import method_peft_model, read_config
from moduletune.tuning.models import load_classifier
from moduletune.tuning.modules import adapter_targets

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# Fixed log-spaced bins of |w| so histograms of any two models or modules line up.
HIST_EDGES = np.concatenate([[0.0], np.logspace(-6, 1, 57)])


def family_of(arch: modules.Architecture, inner: str) -> str | None:
    """The in-layer family a parameter name (relative to its layer) belongs to, if any."""
    for family, pattern in arch.families.items():
        if re.match(pattern, inner):
            return family
    return None


def named_module_tensors(model):
    """(family, layer, kind, name, tensor) for every encoder tensor; kind is 'weight' or 'bias'.

    Layer-less tensors are reported as family 'embeddings' with layer -1.
    """
    arch = modules.architecture_for(model.config.model_type)
    base = model.base_model
    for name, param in base.named_parameters():
        kind = "bias" if name.endswith("bias") else "weight"
        m = re.match(arch.layer_pattern, name)
        if m:
            family = family_of(arch, name[m.end() :])
            if family is not None:
                yield family, int(m.group(1)), kind, name, param.detach()
        elif re.match(arch.embeddings, name):
            yield "embeddings", -1, kind, name, param.detach()


def magnitude_stats(model) -> list[dict]:
    """One row per (family, layer, kind): mean/std/quantiles of |w| and a fixed-bin histogram."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for family, layer, kind, _, tensor in named_module_tensors(model):
        groups.setdefault((family, layer, kind), []).append(tensor.float().abs().flatten().cpu())
    rows = []
    for (family, layer, kind), tensors in groups.items():
        values = torch.cat(tensors)
        sample = (
            values
            if values.numel() <= 2_000_000
            else values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:2_000_000]]
        )
        qs = torch.quantile(sample, torch.tensor(QUANTILES)).tolist()
        hist, _ = np.histogram(values.numpy(), bins=HIST_EDGES)
        rows.append(
            {
                "family": family,
                "layer": layer,
                "kind": kind,
                "count": int(values.numel()),
                "mean_abs": float(values.mean()),
                "std_abs": float(values.std()) if values.numel() > 1 else 0.0,
                "max_abs": float(values.max()),
                **{f"q{int(q * 100):02d}": v for q, v in zip(QUANTILES, qs)},
                "hist": hist.tolist(),
            }
        )
    rows.sort(
        key=lambda r: (
            r["layer"],
            modules.FAMILIES.index(r["family"]) if r["family"] in modules.FAMILIES else 99,
            r["kind"],
        )
    )
    return rows


def family_summary(rows: list[dict], kind: str = "weight") -> dict[str, float]:
    """Count-weighted mean |w| of each family over all layers (the headline comparison)."""
    totals: dict[str, list[float]] = {}
    for r in rows:
        if r["kind"] == kind:
            acc = totals.setdefault(r["family"], [0.0, 0])
            acc[0] += r["mean_abs"] * r["count"]
            acc[1] += r["count"]
    return {f: s / n for f, (s, n) in totals.items()}


def relative_change(base_model, tuned_model, names=None) -> list[dict]:
    """||w_tuned - w_base|| / ||w_base|| per trained tensor, grouped as (family, layer, kind)."""
    base = dict(named_tensor_index(base_model))
    tuned = dict(named_tensor_index(tuned_model))
    groups: dict[tuple, list[float]] = {}
    for name, (family, layer, kind, w0) in base.items():
        if names is not None and name not in names:
            continue
        w1 = tuned[name][3]
        key = (family, layer, kind)
        acc = groups.setdefault(key, [0.0, 0.0])
        acc[0] += float((w1.float().cpu() - w0.float().cpu()).pow(2).sum())
        acc[1] += float(w0.float().cpu().pow(2).sum())
    rows = [
        {"family": f, "layer": layer, "kind": k, "relative_change": (d**0.5) / max(b**0.5, 1e-12)}
        for (f, layer, k), (d, b) in groups.items()
    ]
    return [r for r in rows if r["relative_change"] > 0 or names is not None]


def named_tensor_index(model):
    """Full parameter name -> (family, layer, kind, tensor) for encoder tensors."""
    prefix = model.base_model_prefix + "."
    for family, layer, kind, name, tensor in named_module_tensors(model):
        yield prefix + name, (family, layer, kind, tensor)


def run_deltas(artifact_dir) -> list[dict]:
    """How far a finished run moved each trained module, from its artifact and the base model."""
    from safetensors.torch import load_file

    config = read_config(artifact_dir)
    base = load_classifier(config.model, glue.get_task(config.task).num_labels)
    if methods.method_of(config.modules[0]) is not None:
        # An adapter's own tensors are not a module's weights: its change is what it adds once merged (B·A·alpha/r
        # for LoRA, the scaled rows or columns for (IA)³), measured on the weights it wraps.
        _, targets, _ = adapter_targets(base, config.modules, config.layers)
        merged = method_peft_model(artifact_dir, config).merge_and_unload()
        return relative_change(base, merged, names={f"{t}.weight" for t in targets})
    model, _, _ = artifacts.load_tuned(artifact_dir)
    trained = set(load_file(f"{artifact_dir}/{artifacts.TENSORS_FILE}"))
    return relative_change(base, model, names=trained)
