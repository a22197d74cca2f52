"""The model-side views of the Weights and Playground tabs: weight magnitudes, run deltas and predictions.

Each loads a model or an artifact, so each is computed once per model or run and kept in a small
in-process cache (loaded models in an LRU of MODEL_CACHE_SIZE); app.views holds the registry-only views.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pandas as pd

_LOCK = threading.Lock()
_MAGNITUDES: dict[str, pd.DataFrame] = {}
_MAGNITUDE_LOCKS: dict[str, threading.Lock] = {}
_DELTAS: dict[int, pd.DataFrame] = {}
_MODELS: "OrderedDict[tuple, tuple]" = OrderedDict()  # (kind, key) -> (model, tokenizer, config)
MODEL_CACHE_SIZE = 4


# ---------------------------------------------------------------------------------------------- weights


def magnitudes(model: str | None = None) -> pd.DataFrame:
    """Weight-magnitude statistics of a pre-trained model per (family, layer, kind); computed once per model."""
    from moduletune.tuning.config import DEFAULT_MODEL

    name = (model or "").strip() or DEFAULT_MODEL
    from moduletune.app.public import guard_model

    guard_model(name)  # public mode: only allow-listed models, never a typed path
    with _LOCK:
        if name in _MAGNITUDES:
            return _MAGNITUDES[name]
        lock = _MAGNITUDE_LOCKS.setdefault(name, threading.Lock())
    with lock:  # one computation per model even if two people click at once
        with _LOCK:
            if name in _MAGNITUDES:
                return _MAGNITUDES[name]
        from moduletune.tuning import magnitudes as mags
        from moduletune.tuning.models import load_classifier

        rows = mags.magnitude_stats(load_classifier(name, 2))
        frame = pd.DataFrame([{k: v for k, v in r.items() if k != "hist"} for r in rows])
        with _LOCK:
            _MAGNITUDES[name] = frame
        return frame


def run_deltas(registry, run_ids) -> pd.DataFrame:
    """||Δw||/||w|| per trained module and layer for succeeded runs; computed once per run."""
    frames = []
    for rid in [int(i) for i in (run_ids or [])]:
        with _LOCK:
            cached = _DELTAS.get(rid)
        if cached is None:
            run = registry.get(rid)
            if run["status"] != "succeeded" or not run["artifact_dir"]:
                from moduletune.app.form import FormError

                raise FormError("run", f"run {rid} is {run['status']}; deltas need a succeeded run with an artifact")
            from moduletune.tuning.magnitudes import run_deltas as compute

            cached = pd.DataFrame(compute(run["artifact_dir"])).assign(run_id=rid)
            with _LOCK:
                _DELTAS[rid] = cached
        frames.append(cached)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------------------------- playground


def _cached_model(key: tuple, load):
    """The value cached under `key`, loaded once; past MODEL_CACHE_SIZE the least recently used is dropped."""
    with _LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
    value = load()
    with _LOCK:
        _MODELS[key] = value
        while len(_MODELS) > MODEL_CACHE_SIZE:
            _MODELS.popitem(last=False)
    return value


def tuned_model(registry, run_id: int):
    """(model, tokenizer, RunConfig) of a succeeded run, loaded once (a small LRU cache)."""
    run = registry.get(int(run_id))
    if run["status"] != "succeeded" or not run["artifact_dir"]:
        from moduletune.app.form import FormError

        raise FormError("run", f"run {run_id} is {run['status']}; pick a succeeded run")
    from moduletune.tuning.artifacts import load_tuned

    return _cached_model(("tuned", int(run_id)), lambda: load_tuned(run["artifact_dir"]))


def base_model(model: str, task: str, seed: int = 0):
    """The untuned model: the pre-trained encoder with a freshly initialised (seeded) task head."""
    import torch

    from moduletune.tuning import glue
    from moduletune.tuning.models import load_classifier, load_tokenizer

    def load():
        torch.manual_seed(seed)
        return load_classifier(model, glue.get_task(task).num_labels).eval(), load_tokenizer(model), None

    return _cached_model(("base", model, task, seed), load)


def task_inputs(registry, run_id) -> dict:
    """The text boxes a run's task needs: {'task', 'columns', 'pair'}."""
    from moduletune.tuning import glue

    if run_id in (None, ""):
        return {"task": None, "columns": ("sentence",), "pair": False}
    task = glue.get_task(registry.get(int(run_id))["task"])
    return {"task": task.name, "columns": task.text_columns, "pair": len(task.text_columns) == 2}


MAX_PREDICT_CHARS = 5000  # a sentence or paragraph; the model reads at most max_seq_len tokens of it anyway


def predict(registry, run_id, text_a: str, text_b: str | None = None) -> dict:
    """The tuned run's prediction and the untuned base model's, for one text (or pair).

    {'task', 'tuned': {label: prob} or {'score': x}, 'base': ..., 'label', 'base_label'}"""
    from moduletune.app.form import FormError, run_id_of
    from moduletune.tuning import glue
    from moduletune.tuning.artifacts import predict as run_predict

    if run_id in (None, ""):
        raise FormError("run", "pick a finished run first")
    run_id = run_id_of(run_id)
    for label, value in (("text", text_a), ("second text", text_b)):
        if value is not None and (not isinstance(value, str) or len(value) > MAX_PREDICT_CHARS):
            raise FormError("text", f"the {label} must be text of at most {MAX_PREDICT_CHARS:,} characters")
    if not (text_a or "").strip():
        raise FormError("text", "type a sentence first")
    model, tokenizer, config = tuned_model(registry, run_id)
    task = glue.get_task(config.task)
    if len(task.text_columns) == 2:
        if not (text_b or "").strip():
            raise FormError("text", f"{task.name} compares two texts: fill in {task.text_columns[1]} too")
        text = (text_a, text_b)
    else:
        text = text_a
    tuned = run_predict(model, tokenizer, task, [text])[0]
    base_m, base_tok, _ = base_model(config.model, task.name, config.seed)
    base = run_predict(base_m, base_tok, task, [text])[0]
    return {
        "task": task.name,
        "tuned": tuned.get("probabilities", tuned),
        "base": base.get("probabilities", base),
        "label": tuned.get("label", tuned.get("score")),
        "base_label": base.get("label", base.get("score")),
    }
