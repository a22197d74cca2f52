"""The model-side views of the Weights and Playground tabs: weight magnitudes, run deltas and predictions.

Each loads a model or an artifact, so each is computed once per model or run and kept in a small
in-process cache (loaded models in an LRU of MODEL_CACHE_SIZE); app.runs.views holds the registry-only views.
The two tabs' run pickers (scored labels), input labels and example rows live here too: they load no model.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import pandas as pd

from moduletune.app.figures.labels import short_name
from moduletune.app.public.checks import FormError
from moduletune.app.public.limits import guard_model
from moduletune.tasks.entities import Run
from moduletune.tuning import glue
from moduletune.tuning.config import DEFAULT_MODEL
from moduletune.tuning.models import load_classifier, load_tokenizer

_LOCK = threading.Lock()
_MAGNITUDES: dict[str, pd.DataFrame] = {}
_MAGNITUDE_LOCKS: dict[str, threading.Lock] = {}
_DELTAS: dict[int, pd.DataFrame] = {}
_MODELS: "OrderedDict[tuple, tuple]" = OrderedDict()  # (kind, key) -> (model, tokenizer, config)
MODEL_CACHE_SIZE = 4
PICKER_LIMIT = 500  # newest succeeded runs offered in a picker (as many as the Runs tab's table shows)


# ---------------------------------------------------------------------------------------------- run pickers


def run_name(run: Run) -> str:
    """'#12 rte LN@5 seed 0': a run as a chart legend and a picker name it."""
    return f"#{run.id} {run.task} {short_name(run.modules)}@{run.layers} seed {run.seed}"


def scored_run_choices(registry, limit: int = PICKER_LIMIT) -> list[tuple[str, int]]:
    """(label, id) of the succeeded runs that left trained weights (an artifact: never a search or its candidates),
    newest first, each with its score: '#12 rte LN@5 seed 0 · accuracy 0.620'."""
    out = []
    for run in registry.list_runs(status="succeeded", limit=None):
        if run.kind != "run" or not run.artifact_dir:
            continue
        if len(out) >= limit:
            break
        value, metric = run.result.primary_metric, run.result.primary_metric_name or "score"
        shown = "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.3f}"
        out.append((f"{run_name(run)} · {metric} {shown}", int(run.id)))
    return out


# ---------------------------------------------------------------------------------------------- weights


def magnitudes(model: str | None = None) -> pd.DataFrame:
    """Weight-magnitude statistics of a pre-trained model per (family, layer, kind); computed once per model."""

    name = (model or "").strip() or DEFAULT_MODEL

    guard_model(name)  # public mode: only allow-listed models, never a typed path
    with _LOCK:
        if name in _MAGNITUDES:
            return _MAGNITUDES[name]
        lock = _MAGNITUDE_LOCKS.setdefault(name, threading.Lock())
    with lock:  # one computation per model even if two people click at once
        with _LOCK:
            if name in _MAGNITUDES:
                return _MAGNITUDES[name]

        from moduletune.tuning import magnitudes as mags  # imports torch

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
            if run.status != "succeeded" or not run.artifact_dir:
                raise FormError("run", f"run {rid} is {run.status}; deltas need a succeeded run with an artifact")

            from moduletune.tuning.magnitudes import run_deltas as compute  # imports torch

            cached = pd.DataFrame(compute(run.artifact_dir)).assign(run_id=rid, run_label=run_name(run))
            with _LOCK:
                _DELTAS[rid] = cached
        frames.append(cached)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


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
    if run.status != "succeeded" or not run.artifact_dir:
        raise FormError("run", f"run {run_id} is {run.status}; pick a succeeded run")

    from moduletune.tuning.artifacts import load_tuned  # imports torch

    return _cached_model(("tuned", int(run_id)), lambda: load_tuned(run.artifact_dir))


def base_model(model: str, task: str, seed: int = 0):
    """The untuned model: the pre-trained encoder with a freshly initialised (seeded) task head."""
    import torch

    def load():
        torch.manual_seed(seed)
        return load_classifier(model, glue.get_task(task).num_labels).eval(), load_tokenizer(model), None

    return _cached_model(("base", model, task, seed), load)
