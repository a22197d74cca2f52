"""Unit tests of app.figures.charts on hand-built frames: grouping, statistics, ordering, axes and empty states."""

from __future__ import annotations

import io
import math
import statistics

import numpy as np
import pandas as pd
import pytest

from bench.charts_compare import synthetic_events, synthetic_runs
from moduletune.app.compare import figures as comparison
from moduletune.app.figures import charts, curves, labels, tables
from moduletune.app.figures import style as figure_style
from moduletune.app.weights import charts as weight_charts

NOW = pd.Timestamp("2026-01-01 12:00:00")


def run(id, modules="layernorm", layers="all", seed=0, metric=0.8, status="succeeded", task="rte", **kw):
    """One registry row with sensible defaults; keyword overrides for anything else."""
    row = {
        "id": id,
        "status": status,
        "task": task,
        "model": "m",
        "modules": modules,
        "family": modules,
        "layers": layers,
        "seed": seed,
        "lr": 1e-3,
        "primary_metric_name": "accuracy",
        "primary_metric": metric if status == "succeeded" else np.nan,
        "trainable_pct": 0.01,
        "module_pct": 0.01,
        "module_params": 100,
        "head_params": 10,
        "trainable_params": 110,
        "total_params": 1_000_000,
        "step": 10,
        "total_steps": 10,
        "eta_seconds": np.nan,
        "worker": "w0",
        "device": "cpu",
        "submitter": "t",
        "queued_at": NOW - pd.Timedelta(minutes=5),
        "started_at": pd.NaT,
        "finished_at": pd.NaT,
        "error": None,
        "train_seconds": 1.0,
        "unrelated_extra_column": object(),
    }
    row.update(kw)
    if status != "succeeded" and "primary_metric" in kw:
        row["primary_metric"] = kw["primary_metric"]
    return row


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def annotation_texts(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, [t.name for t in fig.data]
    return found[0]


# ---------------------------------------------------------------- names and colours


def test_short_names_and_fixed_colours():
    assert labels.short_name("query+value") == "Q+V"
    assert labels.short_name("value+query") == "Q+V"  # canonical order
    assert labels.short_name("random:layernorm") == "random:LN"
    assert [labels.short_name(f) for f in ("key", "attention_output", "ffn_intermediate", "ffn_output")] == [
        "K",
        "AO",
        "FI",
        "FO",
    ]
    assert figure_style.family_color("layernorm") != figure_style.family_color("query")
    assert (
        figure_style.family_color("random:query")
        == figure_style.family_color("random:layernorm")
        == figure_style.RANDOM_COLOR
    )
    assert figure_style.family_color("value+query") == figure_style.family_color("query+value")


# ---------------------------------------------------------------- 1. score_by_family


def score_runs():
    rows, i = [], 0
    values = {}
    for fam in ("layernorm", "query", "value"):  # deliberately not paper order
        for layers in ("5", "all"):
            for seed in (0, 1, 2):
                i += 1
                m = (
                    0.6
                    + 0.1 * ("query", "value", "layernorm").index(fam)
                    + (0.05 if layers == "all" else 0)
                    + 0.01 * seed**2
                )
                values.setdefault((fam, layers), []).append(m)
                rows.append(run(i, fam, layers, seed, m))
    rows += [run(100, "full", "all", 0, 0.9), run(101, "full", "all", 1, 0.94)]
    rows += [
        run(200, "query", "all", 3, status="failed", primary_metric=0.0),  # not succeeded
        run(201, "query", "all", 4, status="running", primary_metric=0.1),
        run(202, "query", "all", 5, 0.99, task="sst2"),
    ]  # other task
    return frame(*rows), values


def test_score_by_family_groups_families_by_layer_choice_with_seed_stats():
    runs, values = score_runs()
    fig = charts.score_by_family(runs, "rte")
    assert [t.name for t in fig.data] == ["Q", "V", "LN"]  # paper order, full is the line not a bar
    for name, fam in (("Q", "query"), ("V", "value"), ("LN", "layernorm")):
        t = trace(fig, name)
        assert t.type == "bar"
        assert list(t.x) == ["all", "5"]
        for x, y, err in zip(t.x, t.y, t.error_y.array):
            assert y == pytest.approx(statistics.mean(values[(fam, x)]))
            assert err == pytest.approx(statistics.stdev(values[(fam, x)]))
        assert t.marker.color == figure_style.FAMILY_COLORS[fam]
    assert fig.layout.barmode == "group"
    assert fig.layout.yaxis.title.text == "accuracy"
    assert fig.layout.template.layout.paper_bgcolor is not None  # plotly_white applied


def test_score_by_family_counts_only_succeeded_runs_of_the_task():
    runs, values = score_runs()
    q = trace(charts.score_by_family(runs, "rte"), "Q")
    y_all = dict(zip(q.x, q.y))["all"]
    assert y_all == pytest.approx(statistics.mean(values[("query", "all")]))  # failed 0.0 / sst2 0.99 ignored
    assert [int(c[1]) for c in q.customdata] == [3, 3]  # n per bar


def test_score_by_family_reference_line_at_full_fine_tuning_mean():
    runs, _ = score_runs()
    fig = charts.score_by_family(runs, "rte")
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 1
    assert lines[0].y0 == lines[0].y1 == pytest.approx(0.92)
    band = [s for s in fig.layout.shapes if s.type == "rect"][0]  # ± its std over seeds
    assert band.y1 - band.y0 == pytest.approx(2 * statistics.stdev([0.9, 0.94]))
    assert "full fine-tuning 0.920" in annotation_texts(fig)


def test_a_full_fine_tuning_that_did_not_learn_is_no_reference_and_every_chart_says_so():
    """Compare and Study drew 'full fine-tuning 0.522' from a full fine-tuning run that did not learn, so the chart
    read as 'LayerNorm beats full fine-tuning': such a run is no reference, and the chart and table say why."""
    runs = frame(
        run(1, "layernorm", metric=0.80, chance_metric=0.51, learned=True, trainable_pct=0.01),
        run(2, "layernorm", layers="5", metric=0.70, chance_metric=0.51, learned=True, trainable_pct=0.002),
        run(3, "full", metric=0.522, chance_metric=0.51, learned=False, trainable_pct=100.0),
    )
    view = comparison.compare_view(runs, None, "rte")
    for name in ("score_by_family", "efficiency_frontier", "layer_module_heatmap"):
        fig = view[name]
        lines = [s for s in fig.layout.shapes if s.type == "line" and s.y0 == pytest.approx(0.522)]
        assert lines == [] and not any("full fine-tuning 0.522" in str(t) for t in annotation_texts(fig)), name
        said = annotation_texts(fig) + [fig.layout.title.text]
        assert any("full fine-tuning did not learn at these settings" in str(t) for t in said), name
    table = view["results_table"].set_index("module")
    assert table.loc["full fine-tuning reference", "rte"] == "full fine-tuning did not learn at these settings"
    # A full fine-tuning that learned at the same settings is the reference again.
    learned = frame(*runs.to_dict("records")[:2], run(4, "full", metric=0.9, chance_metric=0.51, learned=True))
    assert "full fine-tuning 0.900" in annotation_texts(charts.score_by_family(learned, "rte"))


def test_score_by_family_draws_chance_and_flags_runs_that_did_not_learn():
    runs = frame(
        run(1, "layernorm", metric=0.80, chance_metric=0.51, learned=True),
        run(2, "query", metric=0.51, chance_metric=0.51, learned=False),
        run(3, "query", seed=1, metric=0.52, chance_metric=0.51, learned=False),
    )
    fig = charts.score_by_family(runs, "rte")
    chance = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(chance) == 1 and chance[0].y0 == pytest.approx(0.51) and "chance 0.510" in annotation_texts(fig)
    q = trace(fig, "Q")
    assert q.base == pytest.approx(0.51) and q.y[0] == pytest.approx(0.515 - 0.51)  # bars rise from chance
    assert list(q.text) == ["✗"] and "did not learn (2/2 runs)" in q.customdata[0][4]
    assert list(trace(fig, "LN").text) == [""]
    lo, hi = fig.layout.yaxis.range
    assert lo < 0.51 and hi > 0.80 and hi - lo >= 0.1  # chance and the best bar on one honest axis


def test_score_by_family_without_full_runs_has_no_line_and_hatched_random():
    runs = frame(
        run(1, "layernorm"), run(2, "random:layernorm", metric=0.7), run(3, "random:layernorm", seed=1, metric=0.72)
    )
    fig = charts.score_by_family(runs, "rte")
    assert len(fig.layout.shapes) == 0
    r = trace(fig, "random:LN")
    assert r.marker.color == figure_style.RANDOM_COLOR and r.marker.pattern.shape == "/"
    assert r.y[0] == pytest.approx(0.71)
    assert trace(fig, "LN").error_y.array[0] == 0  # a single seed has no spread


# ---------------------------------------------------------------- 2. efficiency_frontier


def test_efficiency_frontier_log_x_one_point_per_succeeded_run_with_hover():
    runs = frame(
        run(1, "layernorm", metric=0.80, trainable_pct=0.02, trainable_params=4_500),
        run(2, "layernorm", seed=1, metric=0.82, trainable_pct=0.02),
        run(3, "query", metric=0.78, trainable_pct=1.6),
        run(4, "full", metric=0.85, trainable_pct=100.0),
        run(5, "query", status="failed", trainable_pct=1.6),
    )
    fig = charts.efficiency_frontier(runs, "rte")
    assert fig.layout.xaxis.type == "log"
    assert [t.name for t in fig.data] == ["frontier (seed means)", "Q", "LN", "full"]
    ln = trace(fig, "LN")  # the two LN seeds are one point: their mean, with their spread as an error bar
    assert list(ln.x) == [0.02] and list(ln.y) == [pytest.approx(0.81)]
    assert ln.error_y.array[0] == pytest.approx(statistics.stdev([0.80, 0.82]))
    assert ln.customdata[0][0] == "LN" and int(ln.customdata[0][4]) == 2 and ln.customdata[0][5] == "0.001"
    assert "n = " in ln.hovertemplate and "lr" in ln.hovertemplate
    assert sum(len(t.x) for t in fig.data if not t.name.startswith("frontier")) == 3
    # Pareto frontier through the means: LN (0.81) then full (0.85), never through LN's best seed (0.82).
    front = trace(fig, "frontier (seed means)")
    assert list(front.y) == [pytest.approx(0.81), 0.85] and list(front.x) == [0.02, 100.0]


def test_efficiency_frontier_all_tasks_facets_with_one_legend_entry_per_family():
    runs = frame(run(1, "layernorm", task="rte"), run(2, "layernorm", task="sst2"), run(3, "query", task="sst2"))
    fig = charts.efficiency_frontier(runs)
    assert [a.text for a in fig.layout.annotations][:2] == ["sst2", "rte"]  # GLUE order subplot titles
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log"
    assert [t.name for t in fig.data if t.showlegend is not False] == ["frontier (seed means)", "Q", "LN"]
    assert {t.xaxis for t in fig.data} == {"x", "x2"}


def test_efficiency_frontier_puts_lora_and_ia3_beside_families_against_time_or_memory():
    """Methods sit on the same frontier as families, each labelled with its method; the x axis can be the seed
    runs' median training time or peak memory (peft's comparison draws both), and a run without a peak is left
    out of the memory chart rather than drawn at 0."""
    runs = frame(
        run(1, "layernorm", metric=0.80, trainable_pct=0.02, train_seconds=40.0, peak_memory_mb=900.0),
        run(2, "layernorm", seed=1, metric=0.82, trainable_pct=0.02, train_seconds=44.0, peak_memory_mb=910.0),
        run(3, "lora:query+lora:value", metric=0.84, trainable_pct=0.3, train_seconds=60.0, peak_memory_mb=1000.0),
        run(4, "ia3:key+ia3:value+ia3:ffn_output", metric=0.79, trainable_pct=0.06, train_seconds=50.0),
        run(5, "full", metric=0.86, trainable_pct=100.0, train_seconds=120.0, peak_memory_mb=1500.0),
    )
    by_params = charts.efficiency_frontier(runs, "rte")
    assert {"LN", "lora:Q+V", "ia3:K+V+FO", "full"} <= {t.name for t in by_params.data}
    assert list(trace(by_params, "lora:Q+V").x) == [0.3]
    by_time = charts.efficiency_frontier(runs, "rte", cost="train_seconds")
    assert "training time" in by_time.layout.title.text and "training time" in by_time.layout.xaxis.title.text
    assert list(trace(by_time, "LN").x) == [pytest.approx(42.0)]  # the median of the two seeds
    assert list(trace(by_time, "frontier (seed means)").x) == [pytest.approx(42.0), 60.0, 120.0]
    assert "training %{x:.3g} s" in trace(by_time, "LN").hovertemplate
    by_memory = charts.efficiency_frontier(runs, "rte", cost="peak_memory_mb")
    assert "ia3:K+V+FO" not in {t.name for t in by_memory.data}  # no peak recorded: not drawn at 0
    assert list(trace(by_memory, "lora:Q+V").x) == [1000.0] and by_memory.layout.xaxis.type == "log"


# ---------------------------------------------------------------- 3. layer_module_heatmap


def test_layer_module_heatmap_places_means_by_family_and_layer():
    runs = frame(
        run(1, "query", "0", metric=0.60),
        run(2, "query", "0", seed=1, metric=0.64),
        run(3, "layernorm", "3", metric=0.80),
        run(4, "layernorm", "0", metric=0.70),
        run(5, "layernorm", "all", metric=0.99),  # not a single layer
        run(6, "layernorm", "0-3", metric=0.99),  # not a single layer
        run(7, "query", "3", status="failed"),
    )
    fig = charts.layer_module_heatmap(runs, "rte")
    hm = fig.data[0]
    assert hm.type == "heatmap"
    assert list(hm.y) == ["Q", "LN"] and list(hm.x) == ["0", "3"]
    assert hm.z[0][0] == pytest.approx(0.62) and hm.z[0][1] is None
    assert hm.z[1][0] == pytest.approx(0.70) and hm.z[1][1] == pytest.approx(0.80)
    assert hm.text[1][1] == "0.800" and hm.texttemplate == "%{text}"


def test_layer_module_heatmap_without_single_layer_runs_explains():
    fig = charts.layer_module_heatmap(frame(run(1, "layernorm", "all")), "rte")
    assert len(fig.data) == 0
    assert any("single-layer" in t for t in annotation_texts(fig))


# ---------------------------------------------------------------- 4. training_curves


def curve_events():
    rows = []
    for rid in (1, 2, 3):
        for step in (10, 20, 30):
            rows.append((rid, step, "train", "loss", 1.0 / step + rid))
            rows.append((rid, step, "train", "lr", 0.001))
        rows.append((rid, 30, "validation", "accuracy", 0.5 + rid / 10))
        rows.append((rid, 15, "validation", "accuracy", 0.4 + rid / 10))
        rows.append((rid, 30, "validation", "loss", 0.3))
    rows.append((3, 30, "validation_matched", "accuracy", 0.77))
    rows.append((3, 30, "validation_mismatched", "accuracy", 0.66))
    return pd.DataFrame(rows, columns=["run_id", "step", "split", "name", "value"]).assign(epoch=1)


def series(fig, meta: str) -> list:
    """The traces of one series ("loss", "loss raw", "eval", "lr", "examples_per_second"), in run order."""
    return [t for t in fig.data if t.meta == meta]


def axis_titles(fig) -> dict:
    return {k: fig.layout[k].title.text for k in TITLES}


TITLES = {"yaxis": "loss", "yaxis2": "accuracy", "yaxis3": "lr", "yaxis4": "examples/s", "xaxis4": "step"}


def test_training_curves_overlay_loss_eval_and_lr_with_uirevision():
    runs = frame(run(1, "layernorm", "all"), run(2, "query+value", "last:4"))
    fig = curves.training_curves(curve_events(), run_ids=[2, 1], runs=runs, smoothing=0)
    assert fig.layout.uirevision == curves.UIREVISION
    assert [t.name for t in series(fig, "loss")] == ["#2 Q+V@last:4", "#1 LN@all"]
    assert series(fig, "loss raw") == []  # smoothing 0: the raw line is the loss line
    loss = series(fig, "loss")[1]
    assert list(loss.x) == [10, 20, 30] and list(loss.y) == pytest.approx([1.1, 1.05, 1 + 1 / 30])
    assert loss.yaxis == "y"
    ev = series(fig, "eval")[1]
    assert ev.yaxis == "y2" and list(ev.x) == [15, 30] and list(ev.y) == pytest.approx([0.5, 0.6])
    lr = series(fig, "lr")
    assert [t.yaxis for t in lr] == ["y3", "y3"] and list(lr[0].y) == [0.001] * 3
    assert axis_titles(fig) == TITLES
    # Rows from before throughput was recorded: the panel keeps its axis and says why it is empty.
    assert [t.yaxis for t in series(fig, "empty")] == ["y4"]
    assert "no throughput recorded (runs before it was logged)" in annotation_texts(fig)
    assert series(fig, "loss")[0].line.color == series(fig, "eval")[0].line.color == lr[0].line.color
    assert [t.name for t in fig.data if t.showlegend] == ["#2 Q+V@last:4", "#1 LN@all"]  # one legend entry a run


def test_training_curves_matches_mnli_style_split_metric_and_works_without_runs():
    runs = frame(run(3, "layernorm", primary_metric_name="accuracy_matched", task="mnli"))
    fig = curves.training_curves(curve_events(), run_ids=[3], runs=runs)
    assert list(series(fig, "eval")[0].y) == [0.77] and fig.layout.yaxis2.title.text == "accuracy_matched"
    bare = curves.training_curves(curve_events())
    assert [t.name for t in series(bare, "loss")] == ["#1", "#2", "#3"]
    assert bare.layout.uirevision == curves.UIREVISION


# Real rows: one tiny RTE run trained by the worker's own job body (tasks.jobs.run_job) into a SQLite registry,
# so the frame holds exactly what a worker records per step (loss, lr, examples_per_second) and per evaluation.
REAL_STEPS = 8


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, glue_dir):
    """(events frame, runs frame) of one real run: 64 examples in batches of 8, one evaluation at its end."""
    from moduletune.tasks import jobs, submission
    from moduletune.tasks.queue import close_all
    from moduletune.tasks.registry import Registry, dispose_engines
    from moduletune.tuning.config import RunConfig

    mp = pytest.MonkeyPatch()
    mp.setenv("MODULETUNE_HOME", str(tmp_path_factory.mktemp("curves") / "home"))
    for var in ("MODULETUNE_DB_URL", "MODULETUNE_QUEUE_URL"):
        mp.delenv(var, raising=False)
    try:
        registry = Registry()
        config = RunConfig(
            task="rte",
            modules=("layernorm",),
            layers="5",
            max_train=8 * REAL_STEPS,
            max_eval=16,
            batch_size=8,
            max_seq_len=32,
            device="cpu",
            glue_dir=str(glue_dir),
        )
        run_id = submission.submit(registry, config, submitter="test")
        assert jobs.run_job(run_id, registry) == "succeeded", registry.get(run_id).error
        yield registry.events_frame([run_id]), registry.runs_frame()
    finally:
        dispose_engines()
        close_all()
        mp.undo()


def test_a_worker_records_loss_lr_and_throughput_at_every_step(real_run):
    events, runs = real_run
    train = events[events["split"] == "train"]
    for name in ("loss", "lr", "examples_per_second"):
        assert train.loc[train["name"] == name, "step"].tolist() == list(range(1, REAL_STEPS + 1)), name
    rate = train.loc[train["name"] == "examples_per_second", "value"]
    assert (rate > 0).all() and rate.iloc[-1] == pytest.approx(runs["examples_per_second"].iloc[0], rel=0.5)
    lr = train.loc[train["name"] == "lr", "value"].to_numpy()
    assert lr[0] > lr[-1] >= 0  # the schedule decays towards 0 over the run


def test_training_curves_of_a_real_run_draw_lr_and_throughput_on_titled_axes(real_run):
    events, runs = real_run
    rid = int(runs["id"].iloc[0])
    fig = curves.training_curves(events, [rid], runs)
    train = events[events["split"] == "train"]
    for meta, axis in (("lr", "y3"), ("examples_per_second", "y4")):
        (t,) = series(fig, meta)
        assert t.yaxis == axis and list(t.y) == train.loc[train["name"] == meta, "value"].tolist()
    assert axis_titles(fig) == TITLES
    assert series(fig, "empty") == [] and fig.layout.uirevision == curves.UIREVISION


def test_smoothing_changes_the_loss_line_and_keeps_the_raw_points(real_run):
    events, runs = real_run
    rid = int(runs["id"].iloc[0])
    raw = events[(events["split"] == "train") & (events["name"] == "loss")]["value"].to_numpy()
    fig = curves.training_curves(events, [rid], runs, smoothing=0.9)
    (faint,) = series(fig, "loss raw")
    (line,) = series(fig, "loss")
    assert list(faint.y) == raw.tolist() and faint.opacity < 1 and not faint.showlegend
    assert fig.data.index(faint) < fig.data.index(line)  # drawn first: behind the smoothed line
    # TensorBoard's debiased EMA, written out: s_t = 0.9 s_{t-1} + 0.1 x_t, divided by 1 - 0.9^t.
    s, expected = 0.0, []
    for t, x in enumerate(raw, start=1):
        s = 0.9 * s + 0.1 * x
        expected.append(s / (1 - 0.9**t))
    assert list(line.y) == pytest.approx(expected) and not np.allclose(line.y, raw)
    assert np.ptp(line.y) < np.ptp(raw)  # smoother: a narrower swing than the raw reads
    assert "smoothing 0.9" in annotation_texts(fig)[0]
    unsmoothed = curves.training_curves(events, [rid], runs, smoothing=0)
    assert series(unsmoothed, "loss raw") == [] and list(series(unsmoothed, "loss")[0].y) == raw.tolist()
    assert len(series(curves.training_curves(events, [rid], runs), "loss raw")) == 1  # default: smoothed


@pytest.mark.parametrize("bad", [1.0, -0.1, "much", float("nan"), [0.5]])
def test_smoothing_outside_zero_to_0_99_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"smoothing must be a number from 0 to 0\.99"):
        curves.training_curves(curve_events(), smoothing=bad)


def test_a_single_eval_point_gets_an_axis_fitted_to_it(real_run):
    events, runs = real_run
    fig = curves.training_curves(events, [int(runs["id"].iloc[0])], runs)
    (ev,) = series(fig, "eval")
    assert list(ev.x) == [REAL_STEPS] and ev.mode == "markers"  # one evaluation, at the end
    (value,) = ev.y
    lo, hi = fig.layout.yaxis2.range
    assert 0 <= lo < value < hi <= 1 and hi - lo <= 0.15  # not the -0.5..1 an autorange drew
    assert ev.cliponaxis is False  # a point on a bound is drawn whole


def test_eval_range_pads_the_values_and_keeps_to_the_metric_bounds():
    lo, hi = curves.eval_range([0.62, 0.7], ["accuracy"])
    assert lo < 0.62 and 0.7 < hi and hi - lo < 0.15
    assert curves.eval_range([1.0], ["accuracy"]) == pytest.approx([0.884, 1.0])  # slid inside [0, 1]
    assert curves.eval_range([0.0], ["f1"])[0] == 0.0
    lo, hi = curves.eval_range([-0.05, 0.31], ["matthews_correlation"])
    assert -1 <= lo < -0.05 and 0.31 < hi <= 1
    assert curves.eval_range([0.5, 0.55], ["accuracy_matched"]) == curves.eval_range([0.5, 0.55], ["accuracy"])
    lo, hi = curves.eval_range([12.0], ["perplexity"])  # unknown bounds: a window around the value itself
    assert lo < 12 < hi and hi - lo == pytest.approx(12 * 0.1 * 1.16)
    assert curves.eval_range([float("nan")], ["accuracy"]) is None


def test_a_cancelled_run_keeps_its_curves_and_titled_axes(real_run):
    events, runs = real_run
    # What a run cancelled at step 3 leaves: its per-step rows so far, no evaluation (the run stopped first).
    cancelled = events[(events["split"] == "train") & (events["step"] <= 3)]
    row = runs.assign(status="cancelled")
    fig = curves.training_curves(cancelled, [int(row["id"].iloc[0])], row)
    for meta in ("loss", "loss raw", "lr", "examples_per_second"):
        (t,) = series(fig, meta)
        assert list(t.x) == [1, 2, 3], meta
    assert axis_titles(fig) == TITLES
    assert [t.yaxis for t in series(fig, "empty")] == ["y2"] and "no evaluation yet" in annotation_texts(fig)
    assert list(fig.layout.yaxis2.range) == [0, 1]  # an empty accuracy axis still spans accuracy
    # A run still training has no metric name in the registry yet: its task names the axis.
    running = runs.assign(status="running", primary_metric_name=None)
    assert curves.training_curves(cancelled, None, running).layout.yaxis2.title.text == "accuracy"


# ---------------------------------------------------------------- 5. config_diff


def test_config_diff_keeps_only_differing_settings():
    base = {"task": "rte", "modules": ["layernorm"], "lr": 0.01, "seed": 0, "extra": {"note": "a"}}
    runs = frame(
        run(7, config=dict(base)),
        run(9, config={**base, "lr": 0.001, "seed": 1}),
        run(8, config={**base, "seed": 2, "extra": {"note": "b"}}),
    )
    diff = tables.config_diff(runs)
    assert list(diff.columns) == ["setting", "#7", "#9", "#8"]
    assert diff["setting"].tolist() == ["lr", "seed", "extra.note"]
    assert diff.set_index("setting").loc["lr"].tolist() == ["0.01", "0.001", "0.01"]
    full = tables.config_diff(runs, only_differences=False)
    assert full["setting"].tolist() == ["task", "modules", "lr", "seed", "extra.note"]
    assert full.set_index("setting").loc["modules", "#7"] == "layernorm"
    assert tables.config_diff(runs, run_ids=[7, 9])["setting"].tolist() == ["lr", "seed"]


def test_config_diff_falls_back_to_run_columns():
    runs = frame(run(1, seed=0), run(2, seed=1)).drop(columns=["unrelated_extra_column"])
    diff = tables.config_diff(runs)
    assert "seed" in diff["setting"].tolist() and "task" not in diff["setting"].tolist()
    assert "id" not in diff["setting"].tolist()


# ---------------------------------------------------------------- 6. results_table


def results_runs():
    return frame(
        run(1, "full", metric=0.90, trainable_pct=100.0),
        run(2, "full", seed=1, metric=0.92, trainable_pct=100.0),
        run(3, "layernorm", metric=0.80, trainable_pct=0.02),
        run(4, "layernorm", seed=1, metric=0.84, trainable_pct=0.04),
        run(5, "layernorm", seed=2, metric=0.82, trainable_pct=0.03),
        run(6, "random:layernorm", metric=0.70),
        run(7, "query", metric=0.75),
        run(8, "query", task="cola", metric=0.40, primary_metric_name="matthews_correlation"),
        run(9, "query", "5", metric=0.10),  # not layers == "all"
        run(10, "classifier", metric=0.65),
        run(11, "query", status="failed"),
        run(12, "query+value", metric=0.77),
        run(13, "key", metric=0.74),
    )


def test_results_table_rows_in_paper_order_with_mean_std_n_cells():
    table = tables.results_table(results_runs())
    assert list(table.columns) == ["module", "trainable %", "lr", "cola", "rte"]
    assert table["module"].tolist() == ["Q", "K", "LN", "classifier", "Q+V", "random:LN", "full", tables.CHANCE_ROW]
    assert table.set_index("module").loc[tables.CHANCE_ROW, "cola"] == "0.000"  # MCC's chance is 0
    rows = table.set_index("module")
    assert rows.loc["LN", "rte"] == "0.820 ± 0.020 (3)"
    assert rows.loc["full", "rte"] == "0.910 ± 0.014 (2)"
    assert rows.loc["Q", "rte"] == "0.750 (1)" and rows.loc["Q", "cola"] == "0.400 (1)"
    assert rows.loc["LN", "cola"] == ""
    assert rows.loc["LN", "trainable %"] == "0.03%" and rows.loc["full", "trainable %"] == "100%"


def test_results_table_layer_filter_is_a_parameter():
    table = tables.results_table(results_runs(), layers="5").set_index("module")
    assert table.loc["Q", "rte"] == "0.100 (1)"
    assert "LN" not in table.index and "full" in table.index  # global families ignore the layer spec


def test_results_csv_round_trips_through_pandas():
    runs = results_runs()
    numeric = tables.results_table_numeric(runs)
    assert list(numeric.columns) == tables.NUMERIC_COLUMNS
    ln = numeric[(numeric["family"] == "layernorm") & (numeric["task"] == "rte")].iloc[0]
    assert ln["mean"] == pytest.approx(0.82) and ln["std"] == pytest.approx(0.02) and ln["n"] == 3
    assert numeric.loc[numeric["task"] == "cola", "metric"].tolist() == ["matthews_correlation"]
    back = pd.read_csv(io.StringIO(tables.results_csv(runs)), dtype={"variant": object}).fillna({"variant": ""})
    pd.testing.assert_frame_equal(back, numeric, check_dtype=False)


# ---------------------------------------------------------------- 7-8. magnitudes


def mags_frame():
    rows = []
    for layer in (0, 1):
        for fam, scale in (("query", 0.04), ("layernorm", 0.9)):
            q = [scale * f for f in (0.1, 0.5, 1.0, 1.5, 2.5)]
            rows.append(
                {
                    "family": fam,
                    "layer": layer,
                    "kind": "weight",
                    "count": 100 * (layer + 1),
                    "mean_abs": scale * (1 + layer),
                    "std_abs": 0.1,
                    "max_abs": scale * 4,
                    **dict(zip(weight_charts.QUANTILE_COLUMNS, [v * (1 + layer) for v in q])),
                    "hist": [1, 2],
                }
            )
    rows.append(
        {
            "family": "embeddings",
            "layer": -1,
            "kind": "weight",
            "count": 50,
            "mean_abs": 0.03,
            "std_abs": 0.1,
            "max_abs": 0.3,
            **dict(zip(weight_charts.QUANTILE_COLUMNS, [0.001, 0.01, 0.02, 0.04, 0.08])),
            "hist": [1],
        }
    )
    rows.append(
        {
            "family": "layernorm",
            "layer": 0,
            "kind": "bias",
            "count": 10,
            "mean_abs": 0.05,
            "std_abs": 0.1,
            "max_abs": 0.3,
            **dict(zip(weight_charts.QUANTILE_COLUMNS, [0.0, 0.01, 0.02, 0.04, 0.08])),
            "hist": [1],
        }
    )
    return pd.DataFrame(rows)


def test_magnitude_distributions_boxes_from_quantiles_on_log_axis():
    fig = weight_charts.magnitude_distributions(mags_frame())
    assert fig.layout.yaxis.type == "log"
    assert [t.name for t in fig.data] == ["Q", "LN", "embeddings"]
    ln = trace(fig, "LN")
    assert ln.type == "box"
    # count-weighted (100, 200) pooling of layer 0 and layer 1 (x2) quantiles
    w = (1 * 100 + 2 * 200) / 300
    assert ln.median[0] == pytest.approx(0.9 * 1.0 * w)
    assert ln.q1[0] == pytest.approx(0.9 * 0.5 * w) and ln.q3[0] == pytest.approx(0.9 * 1.5 * w)
    assert ln.lowerfence[0] == pytest.approx(0.9 * 0.1 * w) and ln.upperfence[0] == pytest.approx(0.9 * 2.5 * w)
    assert ln.median[0] > 10 * trace(fig, "Q").median[0]
    assert ln.marker.color == figure_style.FAMILY_COLORS["layernorm"]


def test_magnitude_distributions_by_layer_and_bias_kind():
    fig = weight_charts.magnitude_distributions(mags_frame(), by_layer=True)
    assert list(trace(fig, "LN").x) == ["0", "1"] and list(trace(fig, "embeddings").x) == ["emb"]
    assert list(trace(fig, "LN").median) == pytest.approx([0.9, 1.8])
    bias = weight_charts.magnitude_distributions(mags_frame(), kind="bias")
    assert [t.name for t in bias.data] == ["LN"]
    assert bias.data[0].lowerfence[0] == figure_style.LOG_FLOOR  # a zero |b| floored for the log axis


def test_magnitude_heatmap_log10_mean_by_family_and_layer():
    fig = weight_charts.magnitude_heatmap(mags_frame())
    hm = fig.data[0]
    assert list(hm.y) == ["Q", "LN", "embeddings"] and list(hm.x) == ["emb", "0", "1"]
    assert hm.z[1][2] == pytest.approx(math.log10(1.8)) and hm.z[0][1] == pytest.approx(math.log10(0.04))
    assert hm.z[2][0] == pytest.approx(math.log10(0.03)) and hm.z[2][1] is None
    assert hm.text[1][2] == "1.8"
    assert "1e0" in hm.colorbar.ticktext and hm.colorbar.title.text == "mean |weight|"


# ---------------------------------------------------------------- 9. delta_by_layer


def test_delta_by_layer_one_colour_and_legend_entry_per_run_and_a_panel_per_family():
    """Issue 14: with several runs picked, each run keeps one colour in every family's panel (layer on x)."""
    deltas = pd.DataFrame(
        [
            (1, "layernorm", 1, "weight", 0.02),
            (1, "layernorm", 0, "weight", 0.01),
            (1, "query", 0, "weight", 0.002),
            (2, "layernorm", 0, "weight", 0.03),
        ],
        columns=["run_id", "family", "layer", "kind", "relative_change"],
    )
    fig = weight_charts.delta_by_layer(deltas)
    colours = {t.name: set() for t in fig.data}
    for t in fig.data:
        colours[t.name].add(t.marker.color)
    assert set(colours) == {"#1", "#2"} and all(len(c) == 1 for c in colours.values())
    assert colours["#1"] != colours["#2"]
    assert sorted(t.name for t in fig.data if t.showlegend) == ["#1", "#2"]  # one legend entry per run
    ln = next(t for t in fig.data if t.name == "#1" and list(t.x) == ["0", "1"])
    assert list(ln.y) == [0.01, 0.02] and ln.xaxis != next(t for t in fig.data if t.name == "#1").xaxis
    assert fig.layout.yaxis.type == "log"


# ---------------------------------------------------------------- 10. runs_table


def test_runs_table_humanizes_progress_eta_age_and_metric():
    runs = frame(
        run(1, "layernorm", metric=0.8123, trainable_pct=0.0123, queued_at=NOW - pd.Timedelta(minutes=5)),
        run(
            2,
            "query+value",
            status="running",
            step=120,
            total_steps=500,
            eta_seconds=200.0,
            queued_at=NOW - pd.Timedelta(hours=3),
            worker="w1",
            device="cuda:0",
        ),
        run(
            3, status="queued", step=0, total_steps=0, queued_at=NOW - pd.Timedelta(seconds=3), worker=None, device=None
        ),
    )
    table = tables.runs_table(runs, now=NOW)
    assert list(table.columns) == tables.RUNS_TABLE_COLUMNS
    assert table["id"].tolist() == [3, 2, 1]  # newest first
    rows = table.set_index("id")
    assert rows.loc[2, "progress"] == "120/500 (24%)" and rows.loc[2, "ETA"] == "3m 20s"
    assert rows.loc[2, "age"] == "3 h ago" and rows.loc[2, "modules"] == "Q+V"
    assert rows.loc[2, "worker/device"] == "w1 / cuda:0" and rows.loc[2, "metric"] == ""
    assert rows.loc[1, "metric"] == "accuracy 0.812" and rows.loc[1, "trainable %"] == "0.0123%"
    assert rows.loc[1, "age"] == "5 min ago" and rows.loc[1, "ETA"] == ""
    assert rows.loc[3, "age"] == "just now" and rows.loc[3, "progress"] == "" and rows.loc[3, "worker/device"] == ""
    assert tables.runs_table(frame(run(4, status="running", step=499, total_steps=500)), now=NOW)[
        "progress"
    ].tolist() == ["499/500 (99%)"]  # not "100%" before it is done


def test_runs_table_accepts_aware_now_and_aware_timestamps():
    runs = frame(run(1, queued_at=pd.Timestamp("2026-01-01 10:00", tz="UTC")))
    now = pd.Timestamp("2026-01-01 13:00", tz="Europe/Berlin")  # 12:00 UTC
    assert tables.runs_table(runs, now=now)["age"].tolist() == ["2 h ago"]


def test_humanize_helpers():
    assert [labels.humanize_seconds(s) for s in (5, 200, 3700, 90000, np.nan)] == ["5s", "3m 20s", "1h 1m", "1d 1h", ""]
    assert [labels.humanize_age(s) for s in (2, 45, 300, 7200, 86400, 3 * 86400)] == [
        "just now",
        "45 s ago",
        "5 min ago",
        "2 h ago",
        "1 day ago",
        "3 days ago",
    ]


# ---------------------------------------------------------------- empty states, every function


FIGURES = {
    "score_by_family": lambda df: charts.score_by_family(df, "rte"),
    "efficiency_frontier": lambda df: charts.efficiency_frontier(df),
    "efficiency_frontier_task": lambda df: charts.efficiency_frontier(df, "rte"),
    "layer_module_heatmap": lambda df: charts.layer_module_heatmap(df, "rte"),
    "training_curves": lambda df: curves.training_curves(df),
    "magnitude_distributions": lambda df: weight_charts.magnitude_distributions(df),
    "magnitude_heatmap": lambda df: weight_charts.magnitude_heatmap(df),
    "delta_by_layer": lambda df: weight_charts.delta_by_layer(df),
}
TABLES = {
    "config_diff": tables.config_diff,
    "results_table": tables.results_table,
    "results_table_numeric": tables.results_table_numeric,
    "runs_table": tables.runs_table,
}
UNFINISHED = frame(run(1, status="running"), run(2, status="failed"), run(3, status="queued"))


@pytest.mark.parametrize(
    "empty",
    [pd.DataFrame(), None, UNFINISHED.iloc[0:0], UNFINISHED],
    ids=["no-columns", "none", "no-rows", "none-finished"],
)
@pytest.mark.parametrize("name", list(FIGURES))
def test_empty_frames_give_an_explanatory_annotation(name, empty):
    fig = FIGURES[name](empty)
    assert len(fig.data) == 0
    texts = annotation_texts(fig)
    assert len(texts) == 1 and texts[0].startswith("No ")
    assert fig.layout.template.layout.paper_bgcolor is not None and fig.layout.title.text


def test_empty_runs_use_the_agreed_message():
    assert annotation_texts(charts.score_by_family(pd.DataFrame(), "rte")) == [figure_style.NO_RUNS]
    assert figure_style.NO_RUNS == "No finished runs yet — submit one in the Experiment tab"
    assert curves.training_curves(pd.DataFrame()).layout.uirevision == curves.UIREVISION


@pytest.mark.parametrize("empty", [pd.DataFrame(), None], ids=["no-columns", "none"])
@pytest.mark.parametrize("name", list(TABLES))
def test_empty_tables_are_empty_frames_with_headers(name, empty):
    table = TABLES[name](empty)
    assert isinstance(table, pd.DataFrame) and table.empty and len(table.columns) >= 1
    assert tables.results_csv(empty).strip() == ",".join(tables.NUMERIC_COLUMNS)
    view = comparison.compare_view(empty, empty, "rte")
    assert annotation_texts(view["score_by_family"]) == [figure_style.NO_RUNS] and view["results_table"].empty


def test_unfinished_runs_still_show_in_runs_table_but_not_results():
    assert len(tables.runs_table(UNFINISHED, now=NOW)) == 3
    assert tables.results_table(UNFINISHED).empty


# ---------------------------------------------------------------- 11. compare_view on 1,000 runs


def test_compare_view_on_a_thousand_runs():
    runs = synthetic_runs(1000)
    events = synthetic_events(runs, 20, steps=100)
    ids = runs["id"].head(20).tolist()
    view = comparison.compare_view(runs, events, "sst2", ids)
    assert set(view) == {
        "score_by_family",
        "efficiency_frontier",
        "layer_module_heatmap",
        "training_curves",
        "results_table",
        "config_diff",
    }
    done = runs[(runs["status"] == "succeeded") & (runs["task"] == "sst2")]
    frontier = view["efficiency_frontier"]
    # One point per replicate set (seed means), not per run.
    sets = done.assign(_m=done["modules"].map(labels.canonical_modules)).groupby(["_m", "layers"]).ngroups
    assert sum(len(t.x) for t in frontier.data if not t.name.startswith("frontier")) == sets
    bars = view["score_by_family"]
    assert {t.name for t in bars.data} == {labels.short_name(m) for m in done["modules"] if m != "full"}
    curves_fig = view["training_curves"]
    for meta in ("loss", "loss raw", "eval", "lr"):  # each of the 20 runs in every panel it has rows for
        assert len(series(curves_fig, meta)) == 20, meta
    assert sum(t.showlegend for t in curves_fig.data) == 20
    table = view["results_table"]
    assert list(table.columns[:3]) == ["module", "trainable %", "lr"] and table.shape[1] == 3 + 9
    assert table["module"].iloc[-2] == "full" and table["module"].iloc[0] == "Q"
    assert list(view["config_diff"].columns) == ["setting"] + [f"#{i}" for i in ids]
    heat = view["layer_module_heatmap"].data[0]
    assert list(heat.x) == ["0", "1", "2", "3", "4", "5"]
    default = comparison.compare_view(runs, events, "sst2")  # default selection: latest 5 succeeded runs
    assert default["config_diff"].shape[1] == 6


def test_runs_table_shows_lr_search_kinds_and_runs_at_chance():
    runs = frame(
        run(1, "layernorm", metric=0.51, learned=False, lr=1e-2),
        run(2, "query", kind="search", status="running", lr=3e-4, parent_id=None),
        run(3, "query", kind="search", metric=0.55, lr=3e-3),
        run(4, "query", kind="candidate", metric=0.40, lr=1e-4, parent_id=3),
        run(5, "query", metric=0.6, lr=3e-3, parent_id=3, learned=True),
    )
    rows = tables.runs_table(runs, now=NOW).set_index("id")
    assert rows.loc[1, "metric"] == "accuracy 0.510 ✗ at chance" and rows.loc[1, "lr"] == "0.01"
    assert rows.loc[2, "lr"] == "searching" and rows.loc[3, "lr"] == "chose 0.003"
    assert rows.loc[3, "metric"] == "held-out accuracy 0.550" and rows.loc[3, "modules"] == "Q · search"
    assert rows.loc[4, "modules"] == "Q · candidate (of #3)" and rows.loc[5, "modules"] == "Q (of #3)"
    assert rows.loc[5, "metric"] == "accuracy 0.600"


def test_results_table_of_every_layer_choice_keeps_each_its_own_row():
    runs = frame(
        run(1, "layernorm", "all", metric=0.8),
        run(2, "layernorm", "5", metric=0.6),
        run(3, "layernorm", "5", seed=1, metric=0.62),
        run(4, "full", metric=0.9),
    )
    table = tables.results_table(runs, layers=None).set_index("module")
    assert table.loc["LN @all", "rte"] == "0.800 (1)" and table.loc["LN @5", "rte"] == "0.610 ± 0.014 (2)"
    assert table.loc["full", "rte"] == "0.900 (1)"  # full ignores the layer choice: no suffix


def test_lr_search_curves_one_line_per_rung_with_the_chosen_lr_starred():
    points = pd.DataFrame(
        [
            {
                "search_id": 3,
                "label": "#3 Q@all",
                "lr": lr,
                "score": score,
                "step": step,
                "metric": "pearson",
                "chosen_lr": 3e-3,
            }
            for step, scores in ((21, {1e-4: 0.0, 3e-3: -0.01, 1e-2: 0.08}), (86, {1e-4: 0.0, 3e-3: 0.23, 1e-2: 0.18}))
            for lr, score in scores.items()
        ]
    )
    fig = charts.lr_search_curves(points)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.title.text == "held-out pearson"
    early, last, star = fig.data
    assert early.line.dash == "dot" and early.showlegend is False and last.name == "#3 Q@all"
    assert list(last.y) == [0.0, 0.23, 0.18] and list(star.x) == [3e-3] and star.marker.symbol == "star"
    running = charts.lr_search_curves(points.assign(chosen_lr=float("nan")))
    assert len(running.data) == 2  # no choice yet: no star
    assert annotation_texts(charts.lr_search_curves(None)) == [charts.NO_SEARCHES]
