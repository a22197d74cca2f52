"""The training loop on the real embedded MiniLM and real GLUE files."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from moduletune.tuning import artifacts, glue
from moduletune.tuning.config import RunConfig
from moduletune.tuning.models import load_classifier
from moduletune.tuning.train import CHECKPOINT_FILE, fine_tune


def tiny(glue_dir, **kw):
    base = dict(
        task="rte",
        modules=("layernorm",),
        layers="last:2",
        max_train=64,
        max_eval=48,
        batch_size=16,
        glue_dir=str(glue_dir),
        device="cpu",
    )
    return RunConfig(**{**base, **kw})


def run_cli(args, env_extra=None, timeout=600):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "moduletune.cli.main", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.study  # a science check of a minute: with the others in `make test-study` (CI runs it)
@pytest.mark.parametrize("modules,lr", [("full", "5e-5"), ("layernorm", "1e-2")])
def test_sst2_2000_examples_one_epoch_reaches_075(glue_dir, home, modules, lr):
    """The issue's acceptance run, typed as a user would: both reach 0.75 on the full dev set."""
    proc = run_cli(
        [
            "run",
            "--task",
            "sst2",
            "--modules",
            modules,
            "--layers",
            "all",
            "--max-train",
            "2000",
            "--batch-size",
            "32",
            "--epochs",
            "1",
            "--lr",
            lr,
            "--seed",
            "0",
            "--device",
            "cpu",
            "--glue-dir",
            str(glue_dir),
            "--json",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "task",
        "model",
        "modules",
        "layers",
        "metrics",
        "primary_metric",
        "module_params",
        "head_params",
        "trainable_params",
        "total_params",
        "trainable_pct",
        "train_seconds",
        "examples_per_second",
        "device",
    ):
        assert key in result
    assert result["eval_examples"] == 872 and result["train_examples"] == 2000
    assert result["metrics"]["accuracy"] >= 0.75, result["metrics"]
    assert result["primary_metric"] == result["metrics"]["accuracy"]
    if modules == "layernorm":
        assert result["module_params"] == 6 * 1536 and result["trainable_pct"] < 0.1
    assert "%" in proc.stderr or "step" in proc.stderr  # the progress bar went to stderr


def test_same_seed_same_result_and_only_selection_changes(glue_dir, home, tmp_path):
    a = fine_tune(tiny(glue_dir), output_dir=tmp_path / "a")
    b = fine_tune(tiny(glue_dir), output_dir=tmp_path / "b")
    assert a.metrics == b.metrics and a.history == b.history
    ta, tb = (
        load_file(str(tmp_path / "a" / artifacts.TENSORS_FILE)),
        load_file(str(tmp_path / "b" / artifacts.TENSORS_FILE)),
    )
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    # Only layers 4-5 LayerNorms and the head were saved, and they did move.
    assert all(("layer.4." in k or "layer.5." in k) and "LayerNorm" in k or k.startswith("classifier") for k in ta)
    base = dict(load_classifier("all-MiniLM-L6-v2", 2).named_parameters())
    assert any(not torch.equal(ta[k], base[k].detach()) for k in ta if "LayerNorm" in k)
    # The artifact is small: LayerNorms + head only.
    assert (tmp_path / "a" / artifacts.TENSORS_FILE).stat().st_size < 40_000


def test_artifact_rebuilds_the_tuned_model(glue_dir, home, tmp_path):
    result = fine_tune(tiny(glue_dir, task="sst2", max_train=96, max_eval=64), output_dir=tmp_path / "art")
    model, tokenizer, config = artifacts.load_tuned(tmp_path / "art")
    assert config.task == "sst2"
    dev = glue.subsample(glue.load_glue("sst2", glue_dir)["validation"], 64, 0)
    preds = artifacts.predict(model, tokenizer, "sst2", list(dev["sentence"]))
    names = glue.get_task("sst2").label_names
    acc = sum(names.index(p["label"]) == y for p, y in zip(preds, dev["label"])) / len(dev)
    assert abs(acc - result.metrics["accuracy"]) < 1e-9
    assert abs(sum(preds[0]["probabilities"].values()) - 1) < 1e-5


def test_events_cancel_and_eval_every(glue_dir, home):
    events = []

    def on_event(event):
        events.append(event)
        return event["kind"] == "step" and event["step"] == 3

    result = fine_tune(tiny(glue_dir, eval_every=2), on_event)
    steps = [e for e in events if e["kind"] == "step"]
    assert result.stopped and result.steps == 3 and [e["step"] for e in steps] == [1, 2, 3]
    assert {"loss", "lr", "examples_per_second", "eta_seconds", "epoch", "total_steps"} <= steps[0].keys()
    assert steps[0]["total_steps"] == 4 and steps[-1]["eta_seconds"] >= 0
    evals = [e for e in events if e["kind"] == "eval"]
    assert [e["step"] for e in evals] == [2] and "accuracy" in evals[0]["metrics"]


def test_stop_then_resume_equals_uninterrupted(glue_dir, home, tmp_path):
    cfg = tiny(glue_dir, epochs=2)
    whole = fine_tune(cfg, output_dir=tmp_path / "whole")
    stopped = fine_tune(cfg, lambda e: e["kind"] == "step" and e["step"] == 6, checkpoint_dir=tmp_path / "ck")
    assert stopped.stopped and (tmp_path / "ck" / CHECKPOINT_FILE).is_file()
    resumed = fine_tune(cfg, checkpoint_dir=tmp_path / "ck", output_dir=tmp_path / "resumed")
    assert resumed.resumed_from_step == 6 and resumed.steps == whole.steps == 8
    assert resumed.metrics == whole.metrics
    tw = load_file(str(tmp_path / "whole" / artifacts.TENSORS_FILE))
    tr = load_file(str(tmp_path / "resumed" / artifacts.TENSORS_FILE))
    assert all(torch.equal(tw[k], tr[k]) for k in tw)


def test_regression_task_stsb(glue_dir, home):
    result = fine_tune(tiny(glue_dir, task="stsb", modules=("bias",), layers="all", max_train=64))
    assert set(result.metrics) == {"pearson", "spearman"} and result.primary_metric_name == "pearson"
    assert -1 <= result.metrics["pearson"] <= 1


def test_random_control_moves_only_masked_entries(glue_dir, home, tmp_path):
    fine_tune(tiny(glue_dir, modules=("random:layernorm",), layers="5", weight_decay=0.1), output_dir=tmp_path / "r")
    tuned = load_file(str(tmp_path / "r" / artifacts.TENSORS_FILE))
    base = dict(load_classifier("all-MiniLM-L6-v2", 2).named_parameters())
    changed = sum(int((tuned[k] != base[k].detach()).sum()) for k in tuned if not k.startswith("classifier"))
    assert 0 < changed <= 1536


def test_start_and_checkpoint_events(glue_dir, home, tmp_path):
    events = []
    result = fine_tune(tiny(glue_dir, checkpoint_every=2), lambda e: events.append(e), checkpoint_dir=tmp_path / "ck")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and events[0]["total_steps"] == 4 and result.steps == 4
    assert [e["step"] for e in events if e["kind"] == "checkpoint"] == [2, 4]  # every 2 steps; the epoch's end once
    # A stop asked for at "start" ends the run before its first step.
    stopped = fine_tune(tiny(glue_dir), lambda e: e["kind"] == "start")
    assert stopped.stopped and stopped.steps == 0


def test_stop_at_step_then_resume_equals_uninterrupted(glue_dir, home, tmp_path):
    cfg = tiny(glue_dir, epochs=2)  # 4 steps an epoch, 8 in all
    whole = fine_tune(cfg, output_dir=tmp_path / "whole")
    first = fine_tune(cfg, checkpoint_dir=tmp_path / "ck", stop_at_step=3)
    assert first.stopped and first.steps == 3 and [h["step"] for h in first.history] == [3]
    assert first.primary_metric == first.history[-1]["metrics"]["accuracy"]
    again = fine_tune(cfg, checkpoint_dir=tmp_path / "ck", stop_at_step=3)  # already there: nothing to train
    assert again.stopped and again.steps == 3 and again.metrics == first.metrics and again.chance_metrics
    second = fine_tune(cfg, checkpoint_dir=tmp_path / "ck", stop_at_step=4)  # an epoch's end: one eval there
    assert second.stopped and [h["step"] for h in second.history] == [3, 4]
    lrs = []
    rest = fine_tune(
        cfg,
        lambda e: lrs.append(e["lr"]) if e["kind"] == "step" else None,
        checkpoint_dir=tmp_path / "ck",
        output_dir=tmp_path / "resumed",
    )
    assert not rest.stopped and rest.steps == whole.steps == 8 and rest.resumed_from_step == 4
    assert rest.metrics == whole.metrics and rest.history[-1] == whole.history[-1]
    assert lrs[-1] == 0.0  # the schedule is the full run's: it decays to zero at step 8, not at a stop
    tw = load_file(str(tmp_path / "whole" / artifacts.TENSORS_FILE))
    tr = load_file(str(tmp_path / "resumed" / artifacts.TENSORS_FILE))
    assert all(torch.equal(tw[k], tr[k]) for k in tw)


def test_holdout_slice_is_seeded_stratified_and_replaces_validation(glue_dir, home):
    from moduletune.tuning.train import load_splits

    cfg = tiny(glue_dir, max_train=200, eval_on="holdout", holdout_fraction=0.2)
    task, train, evals = load_splits(cfg)
    assert list(evals) == [glue.HOLDOUT] and len(evals["holdout"]) == 40 and len(train) == 160
    assert not set(train["idx"]) & set(evals["holdout"]["idx"])
    full = glue.subsample(glue.load_glue("rte", glue_dir)["train"], 200, 0)
    assert sorted([*train["idx"], *evals["holdout"]["idx"]]) == sorted(full["idx"])  # a split of the same rows
    share = sum(full["label"]) / 200
    assert abs(sum(evals["holdout"]["label"]) - share * 40) <= 1  # stratified
    assert load_splits(cfg)[2]["holdout"]["idx"] == evals["holdout"]["idx"]  # deterministic per seed
    assert load_splits(cfg.replace(seed=1))[2]["holdout"]["idx"] != evals["holdout"]["idx"]
    result = fine_tune(cfg)
    assert result.eval_on == "holdout" and result.eval_examples == 40 and result.train_examples == 160
    assert result.primary_metric_name == "accuracy" and result.primary_metric == result.metrics["accuracy"]
    stsb = fine_tune(tiny(glue_dir, task="stsb", modules=("bias",), max_train=64, eval_on="holdout"))
    assert (
        stsb.primary_metric_name == "pearson"
        and stsb.eval_examples == 6
        and set(stsb.chance_metrics) == {"pearson", "spearman"}
    )
    # MNLI's holdout is scored under the plain names, not _matched.
    assert glue.primary_metric("mnli", {glue.HOLDOUT: None}) == "accuracy"
    assert glue.evaluate_splits("mnli", {glue.HOLDOUT: ([0, 1, 2], [0, 1, 1])}) == {"accuracy": 2 / 3}


@pytest.mark.parametrize("modules", ["lora:Q+V", "ia3"])
def test_method_run_caches_its_frozen_prefix_and_resumes_exactly(glue_dir, home, tmp_path, modules):
    """A LoRA or (IA)³ at layer 5 goes through the same loop: layers 0-4 cached, a stop resumed to the same tensors."""
    cfg = tiny(glue_dir, modules=modules, layers="5", epochs=2, prefix_cache="on")
    whole = fine_tune(cfg, output_dir=tmp_path / "whole")
    assert whole.prefix_cache == {"first_trainable_layer": 5, "train": True, "eval": True}
    assert whole.peak_memory_mb > 100 and whole.train_seconds > 0
    stopped = fine_tune(cfg, lambda e: e["kind"] == "step" and e["step"] == 6, checkpoint_dir=tmp_path / "ck")
    assert stopped.stopped
    resumed = fine_tune(cfg, checkpoint_dir=tmp_path / "ck", output_dir=tmp_path / "resumed")
    assert resumed.resumed_from_step == 6 and resumed.metrics == whole.metrics
    tw = load_file(str(tmp_path / "whole" / artifacts.TENSORS_FILE))
    tr = load_file(str(tmp_path / "resumed" / artifacts.TENSORS_FILE))
    assert tw.keys() == tr.keys() and all(torch.equal(tw[k], tr[k]) for k in tw)
    # Only the adapter's tensors in layer 5 and the head are the run's, and the adapter moved off its identity.
    adapter = [k for k in tw if not k.startswith("classifier")]
    assert adapter and all("layer.5." in k and ("lora_" in k or "ia3_l" in k) for k in adapter)
    start = {k: torch.zeros_like(v) if "lora_B" in k else torch.ones_like(v) for k, v in tw.items() if "_A" not in k}
    assert all(not torch.equal(tw[k], start[k]) for k in start if not k.startswith("classifier"))


def test_a_runs_peak_memory_is_its_own_not_the_processs(glue_dir, home):
    """A forked worker trains run after run: a run's peak RSS starts at the run, not at the process's largest."""
    import resource

    big = torch.ones(500_000_000)  # 2 GB held and freed before the run, as a bigger earlier run would have
    del big
    process_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = fine_tune(tiny(glue_dir))
    assert 50 < result.peak_memory_mb < process_peak_mb - 1000
