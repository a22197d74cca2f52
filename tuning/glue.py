"""The nine GLUE tasks: columns, labels, metrics, and loading from the Hub or a local GLUE folder."""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # `datasets` is slow to import; only the functions that need it import it
    import datasets

HUB_ID = "nyu-mll/glue"
GLUE_DIR_ENV = "MODULETUNE_GLUE_DIR"
# A seeded slice of the training rows, held out for choosing settings without touching the validation split.
HOLDOUT = "holdout"


class GlueError(ValueError):
    """A GLUE task or data problem a person can act on (message says what was wrong and what is allowed)."""


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task as the Hub names it: text columns, labels, metrics, eval splits; input_labels: as people say."""

    name: str
    folder: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    primary_metric: str
    eval_splits: tuple[str, ...] = ("validation",)
    input_labels: tuple[str, ...] = ("sentence",)

    @property
    def is_regression(self) -> bool:
        """True for STS-B, whose label is a similarity score rather than a class."""
        return not self.label_names

    @property
    def num_labels(self) -> int:
        """Size of the model head: one output for regression, one per class otherwise."""
        return 1 if self.is_regression else len(self.label_names)


_PAIR = ("sentence1", "sentence2")
_NLI = ("entailment", "not_entailment")
_QQP, _QNLI = ("question1", "question2"), ("question", "sentence")
# What a person calls the texts (the Playground's boxes), where that is not the column's name.
_SENT, _QUES, _PREMISE = ("sentence 1", "sentence 2"), ("question 1", "question 2"), ("premise", "hypothesis")

TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask(
            "cola",
            "CoLA",
            ("sentence",),
            ("unacceptable", "acceptable"),
            ("matthews_correlation",),
            "matthews_correlation",
        ),
        GlueTask("sst2", "SST-2", ("sentence",), ("negative", "positive"), ("accuracy",), "accuracy"),
        GlueTask("mrpc", "MRPC", _PAIR, ("not_equivalent", "equivalent"), ("f1", "accuracy"), "f1", input_labels=_SENT),
        GlueTask("stsb", "STS-B", _PAIR, (), ("pearson", "spearman"), "pearson", input_labels=_SENT),
        GlueTask("qqp", "QQP", _QQP, ("not_duplicate", "duplicate"), ("f1", "accuracy"), "f1", input_labels=_QUES),
        GlueTask(
            "mnli",
            "MNLI",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy_matched", "accuracy_mismatched"),
            "accuracy_matched",
            ("validation_matched", "validation_mismatched"),
            input_labels=_PREMISE,
        ),
        GlueTask("qnli", "QNLI", _QNLI, _NLI, ("accuracy",), "accuracy", input_labels=_QNLI),
        GlueTask("rte", "RTE", _PAIR, _NLI, ("accuracy",), "accuracy", input_labels=_PREMISE),
        GlueTask(
            "wnli", "WNLI", _PAIR, ("not_entailment", "entailment"), ("accuracy",), "accuracy", input_labels=_PREMISE
        ),
    )
}


@dataclass(frozen=True)
class _Layout:
    """Where a task's fields sit in the original GLUE download (not the Hub's names)."""

    files: tuple[tuple[str, str], ...]  # (Hub split, file name in the task folder)
    columns: tuple[str | int, ...]  # one per text column: header name, or position if headerless
    label: str | int
    header: bool = True


_TRAIN_DEV = (("train", "train.tsv"), ("validation", "dev.tsv"))
_LAYOUTS: dict[str, _Layout] = {
    # CoLA ships without a header: source, label, original mark, sentence.
    "cola": _Layout(_TRAIN_DEV, (3,), 1, header=False),
    "sst2": _Layout(_TRAIN_DEV, ("sentence",), "label"),
    "mrpc": _Layout(_TRAIN_DEV, ("#1 String", "#2 String"), "Quality"),
    "stsb": _Layout(_TRAIN_DEV, ("sentence1", "sentence2"), "score"),
    "qqp": _Layout(_TRAIN_DEV, ("question1", "question2"), "is_duplicate"),
    "mnli": _Layout(
        (
            ("train", "train.tsv"),
            ("validation_matched", "dev_matched.tsv"),
            ("validation_mismatched", "dev_mismatched.tsv"),
        ),
        ("sentence1", "sentence2"),
        "gold_label",
    ),
    "qnli": _Layout(_TRAIN_DEV, ("question", "sentence"), "label"),
    "rte": _Layout(_TRAIN_DEV, ("sentence1", "sentence2"), "label"),
    "wnli": _Layout(_TRAIN_DEV, ("sentence1", "sentence2"), "label"),
}


def get_task(name: str | GlueTask) -> GlueTask:
    """Look a task up by Hub name or GLUE folder name, case-insensitively, so "SST-2" and "sst2" agree."""
    if isinstance(name, GlueTask):
        return name
    key = str(name).strip().lower()
    for task in TASKS.values():
        if key in (task.name, task.folder.lower()):
            return task
    raise GlueError(f"Unknown GLUE task {name!r}; allowed: {', '.join(TASKS)}")


def resolve_glue_dir(glue_dir: str | Path | None = None) -> Path | None:
    """The local GLUE folder to read: the argument, else $MODULETUNE_GLUE_DIR, else None (the Hub)."""
    chosen = glue_dir if glue_dir not in (None, "") else os.environ.get(GLUE_DIR_ENV) or None
    return None if chosen is None else Path(chosen).expanduser()


def load_glue(task: str | GlueTask, glue_dir: str | Path | None = None) -> "datasets.DatasetDict":
    """Load a task with the Hub's split and column names, from a local GLUE folder if one is set, else the Hub."""
    task = get_task(task)
    root = resolve_glue_dir(glue_dir)
    if root is None:
        import datasets

        try:
            return datasets.load_dataset(HUB_ID, task.name)
        except Exception as err:  # offline, no such config, hub outage: say how to get around it
            raise GlueError(
                f"Could not load {task.name} from the Hub ({HUB_ID}): {err}. "
                f"Set {GLUE_DIR_ENV} to a local GLUE folder to work offline."
            ) from err
    return _load_local(task, root)


def require_split(
    dsd: Mapping, split: str, task: str | GlueTask, glue_dir: str | Path | None = None
) -> "datasets.Dataset":
    """Return one split of a loaded task, or a GlueError naming the file that would have held it."""
    task = get_task(task)
    if split in dsd:
        return dsd[split]
    files = dict(_LAYOUTS[task.name].files)
    if split not in files:
        raise GlueError(f"{task.name} has no split {split!r}; allowed: {', '.join(files)}")
    root = resolve_glue_dir(glue_dir)
    if root is None:
        raise GlueError(f"{task.name} from the Hub has no split {split!r}; it has: {', '.join(dsd)}")
    path = root / task.folder / files[split]
    raise GlueError(
        f"{task.name} split {split!r} is missing: looked for {path}; "
        f"expected the GLUE {files[split]} file there ({_expected(task)})"
    )


def _expected(task: GlueTask) -> str:
    """The files a task folder should hold, for error messages."""
    names = [f"{task.folder}/{f}" for _, f in _LAYOUTS[task.name].files]
    return "the GLUE download layout: " + ", ".join(names[:-1]) + " and " + names[-1]


def _load_local(task: GlueTask, root: Path) -> "datasets.DatasetDict":
    """Read the original GLUE TSV files of one task into a DatasetDict shaped like the Hub's."""
    import datasets

    folder = root / task.folder
    if not folder.is_dir():
        raise GlueError(f"GLUE folder for {task.name} not found: {folder} (expected {_expected(task)})")
    layout = _LAYOUTS[task.name]
    # A folder may hold only the dev file (e.g. for evaluation); the train split is checked by require_split.
    present = {split: folder / name for split, name in layout.files if (folder / name).is_file()}
    if not any(split in present for split in task.eval_splits):
        wanted = " or ".join(str(folder / name) for split, name in layout.files if split in task.eval_splits)
        raise GlueError(f"No evaluation file for {task.name}: looked for {wanted} (expected {_expected(task)})")
    features = datasets.Features(
        {
            **{column: datasets.Value("string") for column in task.text_columns},
            "label": datasets.Value("float32")
            if task.is_regression
            else datasets.ClassLabel(names=list(task.label_names)),
            "idx": datasets.Value("int32"),
        }
    )
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(_read_tsv(path, task, layout), features=features)
            for split, path in present.items()
        }
    )


def _read_tsv(path: Path, task: GlueTask, layout: _Layout) -> dict[str, list]:
    """Parse one GLUE TSV into Hub-named columns; idx is the data row's position in the file."""
    out: dict[str, list] = {column: [] for column in (*task.text_columns, "label", "idx")}
    for row in _tsv_rows(path, task, layout):
        for column, value in row.items():
            out[column].append(value)
    return out


def _tsv_rows(path: Path, task: GlueTask, layout: _Layout):
    """The data rows of one GLUE TSV, one at a time, as Hub-named dicts (text columns, label, idx)."""
    # utf-8-sig drops MRPC's byte-order mark; QUOTE_NONE because sentences hold unbalanced quotes.
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if layout.header:
            header = [cell.strip() for cell in next(reader, [])]
            positions = [_position(header, name, path) for name in (*layout.columns, layout.label)]
        else:
            positions = [*layout.columns, layout.label]
        needed = max(positions) + 1
        for n, row in enumerate(reader):
            # A few real GLUE rows (QQP train) are cut short; like the Hub, skip them but keep counting.
            if len(row) < needed or not row[positions[-1]].strip():
                continue
            yield {
                **{column: row[position] for column, position in zip(task.text_columns, positions)},
                "label": _parse_label(task, row[positions[-1]], f"{path}:{reader.line_num}"),
                "idx": n,
            }


def _position(header: list[str], name: str, path: Path) -> int:
    """Index of a named header cell, or a GlueError listing the header that was found."""
    if name not in header:
        raise GlueError(f"{path}: header has no column {name!r}; found {header}")
    return header.index(name)


def _parse_label(task: GlueTask, raw: str, where: str) -> int | float:
    """A class id (from a label name or a digit) or, for STS-B, the float score."""
    value = raw.strip()
    if task.is_regression:
        try:
            return float(value)
        except ValueError:
            raise GlueError(f"{where}: score {value!r} is not a number") from None
    if value in task.label_names:
        return task.label_names.index(value)
    if value.isdigit() and int(value) < task.num_labels:
        return int(value)
    allowed = ", ".join([*task.label_names, *map(str, range(task.num_labels))])
    raise GlueError(f"{where}: label {value!r} for {task.name} is not one of {allowed}")


def split_rows(task: str | GlueTask, split: str, glue_dir: str | Path | None = None):
    """The rows of one split as Hub-named dicts (text columns, label id or score, idx), one at a time; a local
    GLUE file is streamed, not loaded whole, so reading its first rows (the Playground's examples) is instant."""
    task = get_task(task)
    root, files = resolve_glue_dir(glue_dir), dict(_LAYOUTS[task.name].files)
    if root is None or split not in files or not (root / task.folder / files[split]).is_file():
        return iter(require_split({} if root else load_glue(task), split, task, root))  # raises unless the Hub has it
    return _tsv_rows(root / task.folder / files[split], task, _LAYOUTS[task.name])


def subsample(
    dataset: "datasets.Dataset", n: int | None, seed: int, stratify_by: str | None = "label"
) -> "datasets.Dataset":
    """A seeded n-row sample, stratified by class, in original order: small runs that still see every class."""
    if n is None or n >= len(dataset):
        return dataset
    if n <= 0:
        raise GlueError(f"Subsample size must be a positive number of rows or None, got {n}")
    rng = np.random.default_rng(seed)
    if stratify_by is not None and stratify_by not in dataset.column_names:
        raise GlueError(f"Cannot stratify by {stratify_by!r}; columns: {', '.join(dataset.column_names)}")
    # Read through numpy: a 67k-row column as Python objects costs most of a second.
    labels = np.asarray(dataset.with_format("numpy")[stratify_by][:]) if stratify_by is not None else None
    if labels is None or not np.issubdtype(labels.dtype, np.integer):
        # Float scores (STS-B) have no classes to keep in proportion.
        chosen = rng.choice(len(dataset), size=n, replace=False)
    else:
        chosen = _stratified(labels, n, rng)
    return dataset.select(np.sort(chosen).tolist())


def _stratified(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Proportional allocation by largest remainder, so each class is within one row of its share."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    leftover = n - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:leftover]] += 1
    return np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take)]
    )


def split_holdout(
    dataset: "datasets.Dataset", fraction: float, seed: int, stratify_by: str | None = "label"
) -> tuple["datasets.Dataset", "datasets.Dataset"]:
    """(rest, holdout): a seeded, class-stratified slice of `fraction` of the rows, both in original order."""
    n_hold = round(fraction * len(dataset))
    if not 0 < n_hold < len(dataset):
        raise GlueError(
            f"Cannot hold out {fraction:g} of {len(dataset)} training rows: need at least one row "
            f"on each side; use more training rows (max_train) or another holdout fraction"
        )
    # Its own stream, so the slice does not depend on how the rows were subsampled.
    rng = np.random.default_rng([seed, 7919])
    labels = np.asarray(dataset.with_format("numpy")[stratify_by][:]) if stratify_by is not None else None
    if labels is None or not np.issubdtype(labels.dtype, np.integer):
        chosen = rng.choice(len(dataset), size=n_hold, replace=False)
    else:
        chosen = _stratified(labels, n_hold, rng)
    held = np.zeros(len(dataset), dtype=bool)
    held[chosen] = True
    return dataset.select(np.flatnonzero(~held).tolist()), dataset.select(np.flatnonzero(held).tolist())


def rank_value(value) -> float:
    """A metric for ranking: nan or None (diverged, constant regression output) ranks below every real score."""
    return value if value is not None and math.isfinite(value) else -math.inf


def compute_metrics(task: str | GlueTask, predictions, labels) -> dict[str, float]:
    """The task's GLUE metrics for one split, as plain floats (MNLI: accuracy of that split)."""
    task = get_task(task)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task.is_regression:
        predictions = predictions.reshape(len(predictions), -1)[:, 0] if predictions.ndim > 1 else predictions
    elif predictions.ndim == 2:  # logits slipped through: take the class, as the caller would
        predictions = predictions.argmax(-1)
    if len(predictions) != len(labels) or len(labels) == 0:
        raise GlueError(
            f"Need as many predictions as labels, and at least one; "
            f"got {len(predictions)} predictions and {len(labels)} labels"
        )
    if task.is_regression:
        from scipy.stats import ConstantInputWarning, pearsonr, spearmanr

        with warnings.catch_warnings():  # constant predictions early in training: nan, not a log flood
            warnings.simplefilter("ignore", ConstantInputWarning)
            return {
                "pearson": float(pearsonr(predictions, labels)[0]),
                "spearman": float(spearmanr(predictions, labels)[0]),
            }
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if task.name == "cola":
        return {"matthews_correlation": float(matthews_corrcoef(labels, predictions))}
    accuracy = float(accuracy_score(labels, predictions))
    if task.name in ("mrpc", "qqp"):
        return {"f1": float(f1_score(labels, predictions, zero_division=0.0)), "accuracy": accuracy}
    return {"accuracy": accuracy}


def primary_metric(task: str | GlueTask, splits=None) -> str:
    """The primary metric's name for the splits evaluated: task.primary_metric, or its plain name on a holdout."""
    task = get_task(task)
    if splits is not None and HOLDOUT in splits and len(task.eval_splits) > 1:
        return task.primary_metric.removesuffix("_" + task.eval_splits[0].removeprefix("validation_"))
    return task.primary_metric


def evaluate_splits(task: str | GlueTask, per_split: Mapping[str, tuple]) -> dict[str, float]:
    """Metrics over a task's evaluation splits, named as in GlueTask.metrics (MNLI: accuracy_matched, ...).

    A held-out training slice (split "holdout", alone) is scored under the plain metric names (accuracy, pearson).
    """
    task = get_task(task)
    if HOLDOUT in per_split and len(per_split) == 1:
        return compute_metrics(task, *per_split[HOLDOUT])
    unknown = [s for s in per_split if s not in task.eval_splits]
    if unknown or not per_split:
        raise GlueError(
            f"{task.name} is evaluated on {', '.join(task.eval_splits)} (or {HOLDOUT} alone); got {list(per_split)}"
        )
    if len(task.eval_splits) == 1:
        return compute_metrics(task, *per_split[task.eval_splits[0]])
    out: dict[str, float] = {}
    for split, (predictions, labels) in per_split.items():
        suffix = split.removeprefix("validation_")
        out.update({f"{k}_{suffix}": v for k, v in compute_metrics(task, predictions, labels).items()})
    return out
