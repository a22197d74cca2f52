"""The Playground tab's logic: a finished run's prediction for a typed text (or pair) beside the base model's,
and a few real rows of its task to click. The models come from app.weights.models' small cache."""

from __future__ import annotations

import math

from moduletune.app.public.checks import FormError, run_id_of
from moduletune.app.weights.models import base_model, tuned_model
from moduletune.tuning import glue


def task_inputs(registry, run_id) -> dict:
    """The text boxes a run's task needs: {'task', 'columns', 'labels', 'pair'}; labels as a person reads them."""
    if run_id in (None, ""):
        return {"task": None, "columns": ("sentence",), "labels": ("sentence",), "pair": False}
    task = glue.get_task(registry.get(int(run_id)).task)
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
    run = registry.get(int(run_id))
    task = glue.get_task(run.task)
    rows = example_rows(task, n, run.config.glue_dir)
    return {"task": task.name, "split": task.eval_splits[0], "labels": task.input_labels, "rows": rows}


MAX_PREDICT_CHARS = 5000  # a sentence or paragraph; the model reads at most max_seq_len tokens of it anyway


def predict(registry, run_id, text_a: str, text_b: str | None = None) -> dict:
    """The tuned run's prediction and the untuned base model's, for one text (or pair).

    {'task', 'tuned': {label: prob} or {'score': x}, 'base': ..., 'label', 'base_label'}"""

    from moduletune.tuning.artifacts import predict as run_predict  # imports torch

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
