"""A run's artifact: only the trained tensors (safetensors) plus its config; rebuild and predict from it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from moduletune.tuning import glue, methods
from moduletune.tuning.config import RunConfig
from moduletune.tuning.disk import write_atomic, write_text
from moduletune.tuning.methods import AdapterSettings
from moduletune.tuning.models import load_classifier, load_tokenizer
from moduletune.tuning.modules import select_parameters

TENSORS_FILE = "trained.safetensors"
CONFIG_FILE = "run_config.json"
RESULT_FILE = "result.json"


def check_output_dir(output_dir) -> Path:
    """Where an artifact is asked to go, checked before training: a new or empty folder that can be made here, so
    a run never ends by writing over a file (or failing to write) after all its training."""
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output {out} is a file: an artifact is a folder and never replaces a file")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"the output folder {out} is not empty: name a new or empty folder for the artifact")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"the output {out} cannot be made: {existing} is not a folder this user can write in")
    return out


def save_artifact(output_dir, model, selection, config: RunConfig, result=None) -> Path:
    """Write the trainable tensors only (a few KB for LayerNorm runs) next to the config and result."""
    from safetensors.torch import save

    out = Path(output_dir)
    params = dict(model.named_parameters())
    tensors = {n: params[n].detach().to("cpu", torch.float32).contiguous() for n in selection.names}
    # Bytes written through a Python file: safetensors' own writer can report success on a full disk.
    blob = save(tensors, metadata={"format": "moduletune", "model": config.model})
    write_atomic(out / TENSORS_FILE, lambda f: f.write(blob), "the artifact")
    write_text(out / CONFIG_FILE, json.dumps(config.to_dict(), indent=2, sort_keys=True), "the artifact's config")
    if result is not None:
        shown = json.dumps({**result.to_dict(), "artifact_dir": str(out)}, indent=2)
        write_text(out / RESULT_FILE, shown, "the artifact's result")
    return out


def base_classifier(config: RunConfig):
    """The run's model before training: the pre-trained encoder and the head fine_tune drew for it.

    A run that kept its head frozen (train_head off) has no head in the artifact: its head is the one fine_tune drew
    right after seeding with the run's seed, so it is drawn again that way (the caller's RNG untouched)."""

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return load_classifier(config.model, glue.get_task(config.task).num_labels)


def load_tuned(artifact_dir, device: str = "cpu"):
    """The base model with the artifact's tensors put back, exactly as the run left it: (model, tokenizer, config)."""
    from safetensors.torch import load_file

    path = Path(artifact_dir)
    if not (path / TENSORS_FILE).is_file():
        raise FileNotFoundError(f"no artifact at {path} (expected {TENSORS_FILE} and {CONFIG_FILE})")
    config = RunConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
    model = base_classifier(config)
    if methods.method_of(config.modules[0]):
        # A LoRA or (IA)³ run's tensors live in its adapter: wrap the same modules first, then load them.
        select_parameters(
            model, config.modules, config.layers, config.train_head, config.seed, AdapterSettings.of(config)
        )
    missing = model.load_state_dict(load_file(str(path / TENSORS_FILE)), strict=False).unexpected_keys
    if missing:
        raise ValueError(f"artifact {path} has tensors this model lacks: {missing[:3]}")
    return model.to(device).eval(), load_tokenizer(config.model), config


@torch.inference_mode()
def predict(model, tokenizer, task, texts: list[tuple[str, ...]] | list[str], max_len: int = 128) -> list[dict]:
    """Label and class probabilities (or a score for STS-B) for each text or text pair."""
    task = glue.get_task(task) if isinstance(task, str) else task
    rows = [(t,) if isinstance(t, str) else tuple(t) for t in texts]
    columns = list(zip(*rows))
    device = next(model.parameters()).device
    enc = tokenizer(
        *[list(c) for c in columns], truncation=True, max_length=max_len, padding=True, return_tensors="pt"
    ).to(device)
    logits = model(**enc).logits.float().cpu()
    if task.is_regression:
        return [{"score": float(v)} for v in logits.squeeze(-1)]
    probs = logits.softmax(-1)
    return [
        {"label": task.label_names[int(p.argmax())], "probabilities": dict(zip(task.label_names, map(float, p)))}
        for p in probs
    ]
