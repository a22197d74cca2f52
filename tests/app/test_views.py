"""The Runs, Compare, Weights and Playground views on a real registry (SQLite in a temp MODULETUNE_HOME).

Finished runs are recorded the way a worker records them (claim, progress events, success with a
result); one real tiny fine-tune provides an artifact for downloads, deltas and predictions.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import pandas as pd
import pytest

from moduletune.app.compare import views as compare_views
from moduletune.app.figures import tables
from moduletune.app.files import downloads
from moduletune.app.playground import predict
from moduletune.app.runs import views
from moduletune.app.weights import models as model_views
from moduletune.tasks import submission
from moduletune.tasks.registry import Registry
from moduletune.tuning.config import RunConfig


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    """One MODULETUNE_HOME for the module (the real fine-tune below is shared by several tests)."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("views") / "home"
    mp.setenv("MODULETUNE_HOME", str(path))
    for var in ("MODULETUNE_DB_URL", "MODULETUNE_QUEUE_URL"):
        mp.delenv(var, raising=False)
    yield path
    from moduletune.tasks.queue import close_all
    from moduletune.tasks.registry import dispose_engines

    dispose_engines()
    close_all()
    mp.undo()


def record(
    reg: Registry,
    config: RunConfig,
    metric: float | None = 0.6,
    steps: int = 4,
    status: str = "succeeded",
    result: dict | None = None,
    trainable_pct: float = 0.01,
) -> int:
    """A run as a worker leaves it: claimed, loss and eval events per step, then its outcome."""
    run_id = submission.submit(reg, config, submitter="test")
    if status == "queued":
        return run_id
    token = reg.claim(run_id, "test-worker", "cpu")
    rows = [
        {"step": s, "epoch": s / steps, "split": "train", "name": "loss", "value": 1.0 / s} for s in range(1, steps + 1)
    ]
    rows += [{"step": steps, "epoch": 1.0, "split": "validation", "name": "accuracy", "value": metric}]
    reg.record_progress(
        run_id, token, rows, step=steps if status != "running" else steps // 2, total_steps=steps, eta_seconds=3.0
    )
    if status == "succeeded":
        reg.mark_succeeded(
            run_id,
            token,
            result
            or {
                "primary_metric_name": "accuracy",
                "primary_metric": metric,
                "metrics": {"accuracy": metric},
                "module_params": 1536,
                "head_params": 770,
                "trainable_params": 2306,
                "encoder_params": 22713216,
                "total_params": 22713986,
                "module_pct": trainable_pct * 0.66,
                "trainable_pct": trainable_pct,
                "train_seconds": 1.5,
                "examples_per_second": 10.0,
                "steps": steps,
                "device": "cpu",
            },
        )
    elif status == "failed":
        reg.mark_failed(run_id, token, "RuntimeError: boom")
    return run_id


@pytest.fixture(scope="module")
def registry(module_home):
    return Registry()


@pytest.fixture(scope="module")
def tuned(registry, module_home, glue_dir):
    """One real tiny fine-tune (RTE, LayerNorm of the last layer) registered as a succeeded run."""
    from moduletune.tuning.train import fine_tune

    config = RunConfig(
        task="rte",
        modules=("layernorm",),
        layers="5",
        max_train=16,
        max_eval=16,
        batch_size=16,
        max_seq_len=64,
        device="cpu",
        glue_dir=str(glue_dir),
    )
    result = fine_tune(config, output_dir=module_home / "artifact-tuned").to_dict()
    return record(registry, config, metric=result["primary_metric"], result=result)


@pytest.fixture(scope="module")
def study(registry):
    """Finished runs over two tasks, families, layers and seeds, plus a running, a queued and a failed one."""
    ids = {}
    for fam, pct, base in (("layernorm", 0.01, 0.6), ("query", 0.65, 0.55), ("full", 100.0, 0.7)):
        for seed in (0, 1):
            c = RunConfig(task="rte", modules=(fam,), layers="all" if fam == "full" else "5", seed=seed)
            ids[(fam, seed)] = record(registry, c, metric=base + 0.01 * seed, trainable_pct=pct)
    ids["mrpc"] = record(registry, RunConfig(task="mrpc", modules=("layernorm",), layers="all"), metric=0.8)
    ids["running"] = record(registry, RunConfig(task="rte", modules=("value",), layers="3"), status="running")
    ids["queued"] = record(registry, RunConfig(task="sst2", modules=("key",), layers="1"), status="queued")
    ids["failed"] = record(registry, RunConfig(task="rte", modules=("key",), layers="1"), status="failed")
    return ids


# ---------------------------------------------------------------------------------------------- runs


def test_runs_table_filters_and_records(registry, study):
    table = views.runs_table(registry)
    assert list(table.columns)[:4] == ["id", "status", "task", "modules"] and len(table) >= 10
    assert table["id"].tolist() == sorted(table["id"].tolist(), reverse=True)  # newest first
    running = views.runs_table(registry, status="running")
    assert running["status"].tolist() == ["running"] and "2/4" in running["progress"].iloc[0]
    assert set(views.runs_table(registry, task="mrpc")["task"]) == {"mrpc"}
    records = views.runs_records(registry, status="all", task="rte")
    json.dumps(records)  # JSON-ready (no NaN, no timestamps)
    assert {r["task"] for r in records} == {"rte"}
    labels = dict((i, label) for label, i in views.run_choices(registry, status="succeeded"))
    assert labels[study[("layernorm", 0)]].endswith("LN@5 seed 0 · succeeded")


def test_run_detail_shows_live_curves_config_and_actions(registry, study):
    d = views.run_detail(registry, study["running"])
    assert d.status == "running" and d.can_cancel and not d.can_retry
    assert "step 2/4" in d.summary and "ETA" in d.summary and d.config["modules"] == ["value"]
    names = [t.name for t in d.curves.data]
    assert names and all(n == f"#{study['running']} V@3" for n in names)
    assert d.curves.layout.uirevision == "moduletune-curves"  # zoom survives refreshes
    failed = views.run_detail(registry, study["failed"])
    assert failed.can_retry and not failed.can_cancel and "boom" in failed.summary
    done = views.run_detail(registry, study[("layernorm", 0)])
    assert "accuracy = 0.6000" in done.summary and done.result["primary_metric"] == 0.6
    empty = views.run_detail(registry, None)
    assert empty.summary == views.NO_RUN and empty.curves.layout.annotations
    missing = views.run_detail(registry, 10_000)
    assert missing.run_id is None and "no run with id" in missing.summary


def test_detail_key_changes_only_when_the_run_moves(registry):
    run_id = record(registry, RunConfig(task="rte", modules=("layernorm",), layers="4"), status="queued")
    key = views.detail_key(registry, run_id)
    assert views.detail_key(registry, run_id) == key
    token = registry.claim(run_id, "w", "cpu")
    registry.record_progress(
        run_id, token, [{"step": 1, "split": "train", "name": "loss", "value": 0.7}], step=1, total_steps=4
    )
    assert views.detail_key(registry, run_id) != key
    assert views.detail_key(registry, None) == ()
    registry.request_cancel(run_id)


# ---------------------------------------------------------------------------------------------- compare


def test_compare_builds_every_chart_from_the_registry(registry, study):
    view = compare_views.compare(registry, "rte")
    assert {
        "score_by_family",
        "efficiency_frontier",
        "layer_module_heatmap",
        "training_curves",
        "results_table",
        "config_diff",
    } <= set(view)
    bars = {t.name: t for t in view["score_by_family"].data}
    assert set(bars) >= {"LN", "Q"} and "full" not in bars  # full is the reference line
    assert list(bars["LN"].y) == pytest.approx([0.605])
    assert view["efficiency_frontier"].layout.xaxis.type == "log"
    assert len(view["run_ids"]) == 5 and study["running"] not in view["run_ids"]
    table = view["results_table"]
    assert set(table["module"]) == {
        "LN",
        "full",
        tables.CHANCE_ROW,
    }  # layers=all: full (any layers) and the mrpc LN run
    assert table.set_index("module").loc["LN", "mrpc"].startswith("0.800")
    chosen = [study[("layernorm", 0)], study[("query", 1)]]
    picked = compare_views.compare(registry, "rte", layers="5", run_ids=chosen)
    diff = picked["config_diff"]
    assert list(diff.columns) == ["setting"] + [f"#{i}" for i in chosen]
    assert set(diff["setting"]) == {"modules", "lr", "seed"}  # only the differences; each family's own lr shows
    everything = compare_views.compare(registry, "rte", run_ids=chosen, only_differences=False)["config_diff"]
    assert "batch_size" in set(everything["setting"])
    by_layer = picked["results_table"].set_index("module")
    assert by_layer.loc["LN", "rte"].startswith("0.605 ± 0.007 (2)")


def test_compare_data_and_csv(registry, study):
    points = compare_views.compare_records(registry, "rte")
    assert {p["id"] for p in points} >= {study[("layernorm", 0)], study[("full", 1)]}
    assert all(p["primary_metric"] is not None and p["task"] == "rte" for p in points)
    assert study["running"] not in {p["id"] for p in points}
    json.dumps(points)
    path = compare_views.results_csv_file(registry, "5")
    csv = pd.read_csv(path)
    assert list(csv.columns) == tables.NUMERIC_COLUMNS
    assert "LN" in set(csv["module"])
    assert compare_views.layer_filter_choices(registry)[0] == "all" and "5" in compare_views.layer_filter_choices(
        registry
    )
    note = compare_views.results_note(pd.DataFrame(), "3", ["all", "3", "5"])
    assert "**all**" in note and "**5**" in note


def test_an_empty_registry_explains_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("MODULETUNE_HOME", str(tmp_path / "empty"))
    reg = Registry()
    assert views.runs_table(reg).empty and compare_views.compare_records(reg, "rte") == []
    view = compare_views.compare(reg, "rte")
    for key in ("score_by_family", "efficiency_frontier", "layer_module_heatmap", "training_curves"):
        assert view[key].layout.annotations, key  # an explanatory message, not an error
    assert "No finished runs yet" in compare_views.results_note(view["results_table"], "all", ["all"])
    assert views.run_choices(reg) == []


# ---------------------------------------------------------------------------------------------- artifacts


def test_artifact_download_zips_the_trained_tensors(registry, tuned):
    run = registry.get(tuned)
    path = downloads.artifact_download(run)
    with zipfile.ZipFile(path) as z:
        assert {"trained.safetensors", "run_config.json"} <= set(z.namelist())
    assert downloads.artifact_download(run) == path  # made once
    assert downloads.artifact_download(replace(run, artifact_dir=None)) is None


def test_deltas_are_computed_once_per_run(registry, tuned, study, monkeypatch):
    deltas = model_views.run_deltas(registry, [tuned])
    assert set(deltas["family"]) == {"layernorm"} and set(deltas["layer"]) == {5}
    assert (deltas["relative_change"] > 0).all() and set(deltas["run_id"]) == {tuned}

    def never(_):
        raise AssertionError("deltas recomputed")

    monkeypatch.setattr("moduletune.tuning.magnitudes.run_deltas", never)
    pd.testing.assert_frame_equal(model_views.run_deltas(registry, [tuned]), deltas)
    assert model_views.run_deltas(registry, []).empty
    with pytest.raises(ValueError, match="running"):
        model_views.run_deltas(registry, [study["running"]])


def test_playground_predicts_with_the_tuned_and_the_base_model(registry, tuned, study):
    spec = predict.task_inputs(registry, tuned)
    assert spec == {
        "task": "rte",
        "columns": ("sentence1", "sentence2"),
        "pair": True,
        "labels": ("premise", "hypothesis"),
    }
    out = predict.predict(registry, tuned, "A man is playing a guitar.", "A person plays music.")
    assert out["task"] == "rte" and set(out["tuned"]) == {"entailment", "not_entailment"}
    assert sum(out["tuned"].values()) == pytest.approx(1.0) and sum(out["base"].values()) == pytest.approx(1.0)
    assert out["tuned"] != out["base"] and out["label"] in out["tuned"]
    again = predict.predict(registry, tuned, "A man is playing a guitar.", "A person plays music.")
    assert again == out  # cached models, deterministic base head
    with pytest.raises(ValueError, match="hypothesis"):  # named as a person reads it (issue 14)
        predict.predict(registry, tuned, "only one sentence", "")
    with pytest.raises(ValueError, match="succeeded"):
        predict.predict(registry, study["running"], "a", "b")


def test_magnitudes_are_computed_once_per_model(module_home):
    mags = model_views.magnitudes("")
    assert {"family", "layer", "kind", "mean_abs", "q50"} <= set(mags.columns) and "hist" not in mags.columns
    ln = mags[(mags.family == "layernorm") & (mags.kind == "weight")]["mean_abs"].mean()
    q = mags[(mags.family == "query") & (mags.kind == "weight")]["mean_abs"].mean()
    assert ln > 5 * q  # the paper's observation, on the embedded MiniLM
    assert model_views.magnitudes("all-MiniLM-L6-v2") is mags
