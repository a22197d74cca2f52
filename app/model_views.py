"""The model-side views of the Weights and Playground tabs: weight magnitudes, run deltas and predictions.

Each loads a model or an artifact, so each is computed once per model or run and kept in a small
in-process cache (loaded models in an LRU of MODEL_CACHE_SIZE); app.views holds the registry-only views.
The two tabs' run pickers (scored labels), input labels and example rows live here too: they load no model.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import pandas as pd

from moduletune.app.labels import short_name

_LOCK = threading.Lock()
_MAGNITUDES: dict[str, pd.DataFrame] = {}
_MAGNITUDE_LOCKS: dict[str, threading.Lock] = {}
_DELTAS: dict[int, pd.DataFrame] = {}
_MODELS: "OrderedDict[tuple, tuple]" = OrderedDict()  # (kind, key) -> (model, tokenizer, config)
MODEL_CACHE_SIZE = 4
PICKER_LIMIT = 500  # newest succeeded runs offered in a picker (as many as the Runs tab's table shows)


# ---------------------------------------------------------------------------------------------- run pickers


def run_name(run: dict) -> str:
    """'#12 rte LN@5 seed 0': a run as a chart legend and a picker name it."""
    return f"#{run['id']} {run['task']} {short_name(run['modules'])}@{run['layers']} seed {run['seed']}"


def scored_run_choices(registry, limit: int = PICKER_LIMIT) -> list[tuple[str, int]]:
    """(label, id) of the succeeded runs that left trained weights (an artifact: never a search or its candidates),
    newest first, each with its score: '#12 rte LN@5 seed 0 · accuracy 0.620'."""
    out = []
    for run in registry.list_runs(status="succeeded", limit=None):
        if run["kind"] != "run" or not run.get("artifact_dir"):
            continue
        if len(out) >= limit:
            break
        value, metric = run.get("primary_metric"), run.get("primary_metric_name") or "score"
        shown = "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.3f}"
        out.append((f"{run_name(run)} · {metric} {shown}", int(run["id"])))
    return out


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

            cached = pd.DataFrame(compute(run["artifact_dir"])).assign(run_id=rid, run_label=run_name(run))
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
    """The text boxes a run's task needs: {'task', 'columns', 'labels', 'pair'}; labels as a person reads them."""
    from moduletune.tuning import glue

    if run_id in (None, ""):
        return {"task": None, "columns": ("sentence",), "labels": ("sentence",), "pair": False}
    task = glue.get_task(registry.get(int(run_id))["task"])
    return {
        "task": task.name,
        "columns": task.text_columns,
        "labels": task.input_labels,
        "pair": len(task.text_columns) == 2,
    }


EXAMPLE_ROWS = 5  # real validation rows offered to click in the Playground
EXAMPLE_CHARS = 300  # longer rows are skipped: an example should read at a glance


def example_rows(task, n: int = EXAMPLE_ROWS, glue_dir=None, max_chars: int = EXAMPLE_CHARS) -> list[dict]:
    """A few real rows of a task's first evaluation split, spread over its answers: [{'texts', 'label', 'idx'}].

    In file order, at most ceil(n / classes) rows per class (STS-B: per rounded score 0..5) so both answers
    show; 'label' is the class name (or the score) and 'idx' the row's place in the split."""
    from moduletune.tuning import glue

    task = glue.get_task(task)
    if not isinstance(n, int) or n < 1:
        raise glue.GlueError(f"Ask for a positive whole number of example rows, got {n!r}")
    per_class = math.ceil(n / (6 if task.is_regression else task.num_labels))
    taken: dict[int, int] = {}
    out: list[dict] = []
    for row in glue.split_rows(task, task.eval_splits[0], glue_dir):
        texts = tuple(row[c] for c in task.text_columns)
        bucket = round(row["label"]) if task.is_regression else int(row["label"])
        if sum(map(len, texts)) > max_chars or taken.get(bucket, 0) >= per_class:
            continue
        taken[bucket] = taken.get(bucket, 0) + 1
        label = float(row["label"]) if task.is_regression else task.label_names[int(row["label"])]
        out.append({"texts": texts, "label": label, "idx": int(row["idx"])})
        if len(out) == n:
            break
    return out


def task_examples(registry, run_id, n: int = EXAMPLE_ROWS) -> dict:
    """A few real rows of a run's evaluation split, read from its GLUE folder; no model is loaded.

    {'task', 'split', 'labels', 'rows': [{'texts': (a, b?), 'label': gold label or score, 'idx'}]}"""
    from moduletune.tuning import glue

    run = registry.get(int(run_id))
    task = glue.get_task(run["task"])
    rows = example_rows(task, n, (run.get("config") or {}).get("glue_dir"))
    return {"task": task.name, "split": task.eval_splits[0], "labels": task.input_labels, "rows": rows}


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
        raise FormError("text", f"type the {task_inputs(registry, run_id)['labels'][0]} first")
    model, tokenizer, config = tuned_model(registry, run_id)
    task = glue.get_task(config.task)
    if len(task.text_columns) == 2:
        if not (text_b or "").strip():
            raise FormError("text", f"{task.name} compares two texts: fill in the {task.input_labels[1]} too")
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
