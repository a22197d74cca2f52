"""Chance level of a finished evaluation, and whether a run learned anything beyond it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from moduletune.tuning import glue

# Correlation-type metrics score 0 for any prediction unrelated to the labels.
ZERO_AT_CHANCE = ("matthews_correlation", "pearson", "spearman")


@dataclass
class Verdict:
    """A run's evaluation against chance: the chance metrics, the noise band, and the call."""

    chance_metrics: dict[str, float]
    chance_metric: float  # the primary metric's chance value
    noise: float  # two standard errors of a chance-level predictor on the primary split's examples
    constant_predictions: bool
    learned: bool
    learned_note: str  # "" when it learned; else a short phrase saying why not


def majority_class(labels) -> int:
    """The most frequent class id (the smallest on a tie), the prediction of a constant classifier."""
    return int(np.bincount(np.asarray(labels, dtype=np.int64)).argmax())


def chance_metrics(task: str | glue.GlueTask, labels_per_split: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The task's metrics for predicting each split's majority class everywhere; 0 for correlations.

    Through glue.compute_metrics, so F1 of MRPC/QQP is that of the constant majority prediction (0.81 on
    MRPC dev, where "equivalent" is 68%), and accuracy is the majority share.
    """
    task = glue.get_task(task)
    per_split = {}
    for split, labels in labels_per_split.items():
        labels = np.asarray(labels)
        # Regression has no class to repeat; the metrics are correlations and a constant gives nan, so use 0.
        const = (
            np.zeros(len(labels), np.float32) if task.is_regression else np.full(len(labels), majority_class(labels))
        )
        per_split[split] = (const, labels)
    metrics = glue.evaluate_splits(task, per_split)
    return {k: 0.0 if k.startswith(ZERO_AT_CHANCE) else v for k, v in metrics.items()}


def noise_band(metric: str, chance: float, n: int) -> float:
    """Two standard errors of a chance-level predictor's score on n examples.

    Accuracy: 2*sqrt(c(1-c)/n), the binomial standard error around the chance accuracy c. F1, Matthews
    correlation, Pearson and Spearman: 2/sqrt(n); a correlation between unrelated variables has a standard
    error of about 1/sqrt(n) (for MCC, n*MCC^2 is chi-squared with one degree of freedom). F1 takes the same
    bound, a conservative one: under label-independent guessing its error is of order sqrt(c(1-c)/n).
    """
    if n <= 0:
        return math.inf
    if metric.startswith("accuracy"):
        return 2 * math.sqrt(max(chance * (1 - chance), 0.0) / n)
    return 2 / math.sqrt(n)


def constant_value(task: str | glue.GlueTask, predictions) -> float | int | None:
    """The one value predicted for every example, or None: a class id, or for regression a spread ~ 0."""
    task = glue.get_task(task)
    preds = np.asarray(predictions)
    if preds.size == 0:
        return None
    if task.is_regression:
        preds = preds.astype(np.float64)
        # Relative tolerance: a head stuck at a bias gives a tiny spread, whatever the label scale.
        if float(np.std(preds)) <= 1e-6 * max(1.0, float(np.abs(preds).mean())):
            return float(preds.mean())
        return None
    return int(preds[0]) if np.all(preds == preds[0]) else None


def judge(
    task: str | glue.GlueTask, per_split: Mapping[str, tuple], metrics: Mapping[str, float], primary: str | None = None
) -> Verdict:
    """Chance metrics, constant-prediction check and the learned call for one evaluation.

    per_split maps each evaluated split to (predictions, labels), as glue.evaluate_splits takes them.
    Learned means: predictions are not all one value and the primary metric beats chance by more than
    noise_band on the primary split's examples.
    """
    task = glue.get_task(task)
    primary = primary or glue.primary_metric(task, per_split)
    chance = chance_metrics(task, {s: labels for s, (_, labels) in per_split.items()})
    n = len(next(iter(per_split.values()))[1]) if len(per_split) == 1 else _primary_split_size(task, per_split, primary)
    noise = noise_band(primary, chance[primary], n)
    const = constant_value(task, np.concatenate([np.asarray(p).ravel() for p, _ in per_split.values()]))
    score = metrics.get(primary, math.nan)
    band = f"{score:.3f} vs {chance[primary]:.3f} ± {noise:.3f}"
    if const is not None:
        shown = f"{const:.3g}" if task.is_regression else task.label_names[const]
        learned, note = False, f"constant predictions (every example: {shown})"
    elif score is None or not math.isfinite(score):
        learned, note = False, f"{primary} is undefined ({score})"
    elif score - chance[primary] > noise:
        learned, note = True, ""
    elif score < chance[primary] - noise:
        learned, note = False, f"below chance ({band})"
    else:
        learned, note = False, f"within noise of chance ({band})"
    return Verdict(
        chance_metrics=chance,
        chance_metric=chance[primary],
        noise=noise,
        constant_predictions=const is not None,
        learned=learned,
        learned_note=note,
    )


def _primary_split_size(task: glue.GlueTask, per_split: Mapping[str, tuple], primary: str) -> int:
    """Examples behind the primary metric when several splits are scored (MNLI: the matched one)."""
    for split, (_, labels) in per_split.items():
        if primary.endswith("_" + split.removeprefix("validation_")):
            return len(labels)
    return min(len(labels) for _, labels in per_split.values())
