"""Chance level and the "did it learn" call, on small arrays and on a real tiny run."""

import math

import numpy as np
import pytest

from moduletune.tuning import chance
from moduletune.tuning.config import RunConfig
from moduletune.tuning.train import fine_tune


def test_chance_is_the_majority_class_through_the_tasks_own_metrics():
    labels = np.array([1, 1, 1, 0])  # MRPC-like: the positive class is the majority
    c = chance.chance_metrics("mrpc", {"validation": labels})
    assert c == {"f1": pytest.approx(2 * 0.75 / 1.75), "accuracy": 0.75}
    assert chance.chance_metrics("sst2", {"validation": np.array([0, 0, 1])}) == {"accuracy": pytest.approx(2 / 3)}
    assert chance.chance_metrics("cola", {"validation": np.array([0, 1, 1])}) == {"matthews_correlation": 0.0}
    assert chance.chance_metrics("stsb", {"validation": np.array([0.5, 3.0, 4.2])}) == {"pearson": 0.0, "spearman": 0.0}
    mnli = chance.chance_metrics(
        "mnli", {"validation_matched": np.array([0, 2, 2]), "validation_mismatched": np.array([1, 1, 0, 0])}
    )
    assert mnli == {"accuracy_matched": pytest.approx(2 / 3), "accuracy_mismatched": 0.5}
    assert chance.chance_metrics("mnli", {"holdout": np.array([1, 1, 0])}) == {"accuracy": pytest.approx(2 / 3)}


def test_noise_band():
    assert chance.noise_band("accuracy", 0.5, 100) == pytest.approx(0.1)
    assert chance.noise_band("accuracy_matched", 0.9, 400) == pytest.approx(2 * math.sqrt(0.09 / 400))
    for metric in ("f1", "matthews_correlation", "pearson", "spearman"):
        assert chance.noise_band(metric, 0.0, 400) == pytest.approx(0.1)


def test_constant_predictions():
    assert chance.constant_value("sst2", [1, 1, 1]) == 1
    assert chance.constant_value("sst2", [1, 0, 1]) is None
    assert chance.constant_value("stsb", np.full(5, 2.61) + 1e-9 * np.arange(5)) == pytest.approx(2.61)
    assert chance.constant_value("stsb", [2.0, 2.5, 3.0]) is None


def test_judge_learned_within_noise_and_constant():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    good = np.where(rng.random(400) < 0.8, labels, 1 - labels)  # about 80% right
    v = chance.judge("sst2", {"validation": (good, labels)}, {"accuracy": float((good == labels).mean())})
    assert v.learned and v.learned_note == "" and not v.constant_predictions
    balanced = np.repeat([0, 1], 200)
    noisy = balanced.copy()
    noisy[rng.choice(400, 192, replace=False)] ^= 1  # 52% right: chance is 0.5 +- 0.05
    acc = float((noisy == balanced).mean())
    v = chance.judge("sst2", {"validation": (noisy, balanced)}, {"accuracy": acc})
    assert not v.learned and v.learned_note == f"within noise of chance ({acc:.3f} vs 0.500 ± 0.050)"
    v = chance.judge("sst2", {"validation": (1 - balanced, balanced)}, {"accuracy": 0.0})
    assert not v.learned and v.learned_note.startswith("below chance (0.000 vs 0.500")
    v = chance.judge("sst2", {"validation": (np.ones(400, int), labels)}, {"accuracy": float(labels.mean())})
    assert v.constant_predictions and not v.learned
    assert v.learned_note == "constant predictions (every example: positive)"
    scores = rng.random(400) * 5
    v = chance.judge("stsb", {"validation": (np.full(400, 2.5, np.float32), scores)}, {"pearson": math.nan})
    assert v.constant_predictions and v.learned_note.startswith("constant predictions (every example: 2.5")
    v = chance.judge("stsb", {"holdout": (scores + rng.normal(0, 1, 400), scores)}, {"pearson": 0.8})
    assert v.learned and v.chance_metric == 0.0 and v.noise == pytest.approx(0.1)


def test_a_real_run_reports_chance(glue_dir, home):
    cfg = RunConfig(
        task="rte",
        modules=("layernorm",),
        layers="last:2",
        max_train=32,
        max_eval=48,
        batch_size=16,
        glue_dir=str(glue_dir),
        device="cpu",
    )
    result = fine_tune(cfg)
    d = result.to_dict()
    for key in ("chance_metric", "chance_metrics", "constant_predictions", "learned", "learned_note"):
        assert key in d
    assert set(result.chance_metrics) == {"accuracy"} and 0.5 <= result.chance_metric < 1
    assert result.chance_metric == result.chance_metrics["accuracy"]
    # 2 steps of LayerNorm on RTE learn nothing a 48-example evaluation can tell from chance.
    assert not result.learned and result.learned_note
