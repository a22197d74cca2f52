"""Compare like with like, on a real registry: runs are pooled over seeds only, and every score has its references.

Runs are recorded the way a worker records them (tests/app/test_views.record), so the settings that
decide pooling come from the stored configs, exactly as in the app.
"""

from __future__ import annotations

import pytest

from moduletune.app.compare import views as compare_views
from moduletune.app.figures import charts, pooling, tables
from moduletune.app.runs import views
from moduletune.tasks import submission
from moduletune.tuning.config import RunConfig
from tests.app.test_views import record

BASE = dict(task="sst2", layers="all", max_train=2000, max_eval=872, epochs=1)


def result(metric: float, chance: float = 0.509, learned: bool = True) -> dict:
    return {
        "primary_metric_name": "accuracy",
        "primary_metric": metric,
        "metrics": {"accuracy": metric},
        "chance_metric": chance,
        "learned": learned,
        "trainable_params": 2306,
        "total_params": 22713986,
        "module_pct": 0.01,
        "trainable_pct": 0.01,
        "steps": 4,
        "device": "cpu",
    }


def submit(registry, metric, learned=True, **changes) -> int:
    config = RunConfig(**{**BASE, "modules": ("layernorm",), **changes})
    return record(registry, config, metric, result=result(metric, learned=learned))


def test_runs_differing_in_max_train_are_not_pooled_and_the_table_says_which(registry):
    submit(registry, 0.80, seed=0)
    submit(registry, 0.82, seed=1)
    submit(registry, 0.55, max_train=256)  # another experiment, not a third seed
    pooled = pooling.pool(registry.runs_frame(), "sst2")
    assert sorted(pooled["n"]) == [1, 2]
    pair = pooled[pooled["n"] == 2].iloc[0]
    assert pair["mean"] == pytest.approx(0.81) and pair["seeds"] == [0, 1]
    assert pooling.mixed_settings(pooling.finished_runs(registry.runs_frame(), "sst2")) == ["max_train"]
    table = tables.results_table(registry.runs_frame()).set_index("module")
    assert table.loc["LN (max_train=2000)", "sst2"] == "0.810 ± 0.014 (2)"
    assert table.loc["LN (max_train=256)", "sst2"] == "0.550 (1)"
    assert "mixes max_train" in charts.score_by_family(registry.runs_frame(), "sst2").layout.title.text


def test_a_loras_rank_sets_lora_runs_apart_never_a_familys_run(registry):
    """LoRA's rank is a setting of LoRA runs only: beside LayerNorm and full fine-tuning no row is labelled with it,
    and two LoRA ranks are two rows that say their rank."""
    submit(registry, 0.80)
    submit(registry, 0.85, modules=("full",))
    submit(registry, 0.82, modules=("lora:query", "lora:value"))
    done = pooling.finished_runs(registry.runs_frame(), "sst2")
    assert pooling.mixed_settings(done) == []
    table = tables.results_table(registry.runs_frame()).set_index("module")
    assert {"LN", "lora:Q+V", "full"} <= set(table.index)
    submit(registry, 0.83, modules=("lora:query", "lora:value"), lora_rank=16)
    done = pooling.finished_runs(registry.runs_frame(), "sst2")
    assert pooling.mixed_settings(done) == ["lora_rank"]
    labels = dict(zip(done["group"] + " " + pooling.variant_labels(done), done["primary_metric"]))
    assert labels["lora:query+lora:value lora_rank=16"] == 0.83 and labels["layernorm "] == 0.80


def test_the_effective_lr_is_stored_shown_in_the_diff_and_splits_pools(registry):
    a = submit(registry, 0.80)  # the LayerNorm default, 1e-2
    b = submit(registry, 0.60, lr=3e-4)
    c = submit(registry, 0.70, modules=("query",))  # query's default, 3e-4
    assert registry.get(a).config_data["lr"] == pytest.approx(1e-2)
    diff = compare_views.compare(registry, "sst2", run_ids=[a, b, c])["config_diff"].set_index("setting")
    assert diff.loc["lr"].tolist() == ["0.01", "0.0003", "0.0003"]
    frame = registry.runs_frame()
    assert pooling.mixed_settings(pooling.finished_runs(frame, "sst2"))[0] == "lr"  # LN at two lrs
    rows = tables.results_table(frame)["module"].tolist()
    assert "LN (lr=0.01)" in rows and "LN (lr=0.0003)" in rows
    hover = charts.score_by_family(frame, "sst2").data[0]
    assert "lr" in hover.hovertemplate


def test_chance_and_full_fine_tuning_references_at_the_same_settings(registry):
    submit(registry, 0.80)
    submit(registry, 0.51, learned=False, modules=("query",))
    submit(registry, 0.86, modules=("full",))
    submit(registry, 0.99, modules=("full",), max_train=50_000)  # other settings: not this table's reference
    pooled = pooling.with_references(pooling.pool(registry.runs_frame(), "sst2"))
    ln = pooled[(pooled["group"] == "layernorm")].iloc[0]
    assert ln["chance"] == pytest.approx(0.509) and ln["full_mean"] == pytest.approx(0.86)
    q = pooled[pooled["group"] == "query"].iloc[0]
    assert bool(q["did_not_learn"]) and pooling.learn_flag(q["did_not_learn"], 1, 1) == "✗ did not learn"
    table = tables.results_table(registry.runs_frame()).set_index("module")
    assert table.loc[tables.CHANCE_ROW, "sst2"] == "0.509"
    assert table.loc["Q (max_train=2000)", "sst2"].endswith("✗")  # the 50k full run makes max_train differ
    numeric = tables.results_table_numeric(registry.runs_frame())
    assert {"chance", "full_mean", "did_not_learn", "lr"} <= set(numeric.columns)


def test_a_search_shows_its_choice_and_curve_and_only_its_final_runs_are_reported(registry):
    config = RunConfig(
        **{**BASE, "modules": ("query",), "lr_search": True, "lr_grid": (1e-4, 1e-2), "extra": {"final_seeds": [0, 1]}}
    )
    search_id = submission.submit(registry, config)
    token = registry.claim(search_id, "w", "cpu")
    registry.record_progress(
        search_id,
        token,
        [
            {"step": s, "epoch": None, "split": "search", "name": f"{lr:.6g}", "value": v}
            for s, lr, v in ((5, 1e-4, 0.50), (5, 1e-2, 0.60), (10, 1e-4, 0.52), (10, 1e-2, 0.70))
        ],
        step=20,
    )
    from moduletune.tuning.search import candidate_config

    candidates = [
        (candidate_config(config, lr), {"lr": lr, "score": v, "steps": 10, "rungs": []})
        for lr, v in ((1e-4, 0.52), (1e-2, 0.70))
    ]
    finals = [config.replace(lr=1e-2, lr_search=False, seed=s) for s in (0, 1)]
    outcome = {
        "chosen_lr": 1e-2,
        "selection": "holdout",
        "grid": [1e-4, 1e-2],
        "metric": "accuracy",
        "primary_metric_name": "accuracy",
        "primary_metric": 0.70,
        "cost_ratio": 1.5,
        "grid_cost_ratio": 2,
    }
    ids = registry.complete_search(search_id, token, outcome, candidates, finals)
    assert len(ids) == 2 and registry.complete_search(search_id, token, outcome, candidates, finals) is None
    detail = views.run_detail(registry, search_id)
    assert (
        "lr search #" in detail.summary and "chose lr 0.01" in detail.summary and "a held-out slice" in detail.summary
    )
    last = [t for t in detail.curves.data if t.showlegend]
    assert len(last) == 1 and list(last[0].y) == [0.52, 0.70]
    compare = compare_views.compare(registry, "sst2")["lr_searches"]
    assert any(t.marker.symbol == "star" for t in compare.data)
    table = tables.runs_table(registry.runs_frame()).set_index("id")
    assert table.loc[search_id, "lr"] == "chose 0.01" and table.loc[ids[0], "modules"] == f"Q (of #{search_id})"
    assert pooling.finished_runs(registry.runs_frame()).empty  # the final runs have not run; nothing else counts
