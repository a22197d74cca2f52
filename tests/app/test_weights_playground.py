"""The Weights tab's deltas figure and the Playground's inputs: runs told apart by colour, titles spelled
right, decade ticks on log axes, human input labels per task, real GLUE example rows and scored run pickers.

Figures are built from frames shaped like app.weights.models' output; the registry is a real SQLite one in a
temporary MODULETUNE_HOME and the example rows are read from the real GLUE folder.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from moduletune.app.figures.style import RUN_COLORS, decade_axis
from moduletune.app.playground import predict
from moduletune.app.weights import charts as weight_charts
from moduletune.app.weights import models as model_views
from moduletune.tasks import submission
from moduletune.tasks.registry import Registry
from moduletune.tuning import glue
from moduletune.tuning.config import RunConfig

COLUMNS = ["run_id", "run_label", "family", "layer", "kind", "relative_change"]


def three_runs() -> pd.DataFrame:
    """Two LayerNorm runs (one layer, all layers) and a query run: the case that shared a colour before."""
    rows = [(3, "#3 rte LN@5 seed 0", "layernorm", 5, "weight", 0.05)]
    rows += [(7, "#7 rte LN@all seed 0", "layernorm", layer, "weight", 0.01 * (1 + layer)) for layer in range(6)]
    rows += [(9, "#9 rte Q@5 seed 0", "query", 5, "weight", 0.003)]
    return pd.DataFrame(rows, columns=COLUMNS)


def mags(kind: str) -> pd.DataFrame:
    """Magnitude rows of one kind for two families over two layers."""
    rows = []
    for layer in (0, 1):
        for family, scale in (("query", 0.04), ("layernorm", 0.9)):
            q = [scale * f for f in (0.1, 0.5, 1.0, 1.5, 2.5)]
            rows.append(
                dict(family=family, layer=layer, kind=kind, count=10, mean_abs=scale)
                | dict(zip(weight_charts.QUANTILE_COLUMNS, q))
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- deltas figure


def test_deltas_one_colour_and_one_legend_entry_per_run():
    fig = weight_charts.delta_by_layer(three_runs())
    colours = {}
    for t in fig.data:
        colours.setdefault(t.name, set()).add(t.line.color)
        assert t.marker.color == t.line.color
    assert all(len(c) == 1 for c in colours.values())  # a run keeps its colour in every panel
    assert len({c.pop() for c in colours.values()}) == 3  # and no two runs share one
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert sorted(legend) == ["#3 rte LN@5 seed 0", "#7 rte LN@all seed 0", "#9 rte Q@5 seed 0"]
    ranked = sorted((t for t in fig.data if t.showlegend is not False), key=lambda t: t.legendrank)
    assert [(t.name[:2], t.line.color) for t in ranked] == [
        ("#3", RUN_COLORS[0]),
        ("#7", RUN_COLORS[1]),
        ("#9", RUN_COLORS[2]),
    ]
    assert fig.layout.legend.title.text == "run"


def test_deltas_put_each_module_family_in_its_own_panel():
    fig = weight_charts.delta_by_layer(three_runs())
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["Q · attention query", "LN · LayerNorms"]  # the paper's family order
    by_axis = {}
    for t in fig.data:
        by_axis.setdefault(t.xaxis, []).append(t.name)
    assert sorted(by_axis.values()) == [["#3 rte LN@5 seed 0", "#7 rte LN@all seed 0"], ["#9 rte Q@5 seed 0"]]
    ln = next(t for t in fig.data if t.name.startswith("#7"))
    assert list(ln.x) == ["0", "1", "2", "3", "4", "5"] and list(ln.y) == pytest.approx([0.01 * i for i in range(1, 7)])
    assert fig.layout.scattermode == "group"  # two runs at layer 5 stand side by side, not on top of each other
    assert fig.layout.xaxis2.categoryarray == ("0", "1", "2", "3", "4", "5")


def test_deltas_bias_dotted_named_in_the_title_and_filtered_by_kind():
    both = pd.concat(
        [three_runs(), pd.DataFrame([(7, "#7 rte LN@all seed 0", "layernorm", 0, "bias", 0.2)], columns=COLUMNS)]
    )
    fig = weight_charts.delta_by_layer(both)
    bias = [t for t in fig.data if t.line.dash == "dot"]
    assert len(bias) == 1 and bias[0].showlegend is False and bias[0].line.color == RUN_COLORS[1]
    assert bias[0].marker.symbol == "circle-open"  # a lone point has no line to dot
    assert {t.marker.symbol for t in fig.data if t.line.dash != "dot"} == {"circle"}
    assert fig.layout.title.text.endswith("weights: filled, solid · biases: open, dotted")
    only = weight_charts.delta_by_layer(both, kind="bias")
    assert [t.name for t in only.data] == ["#7 rte LN@all seed 0"]
    assert only.layout.title.text == weight_charts.DELTAS_TITLE
    no_labels = weight_charts.delta_by_layer(three_runs().drop(columns="run_label"))
    assert sorted(t.name for t in no_labels.data) == ["#3", "#7", "#9"]


def test_deltas_log_axis_labels_whole_decades():
    fig = weight_charts.delta_by_layer(three_runs())
    y = fig.layout.yaxis
    assert y.type == "log" and list(y.ticktext) == ["1e-3", "1e-2", "1e-1"]
    assert list(y.tickvals) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert y.range[0] <= math.log10(0.003) and y.range[1] >= math.log10(0.06)
    assert fig.layout.yaxis2.matches == "y" and fig.layout.yaxis2.ticktext == y.ticktext  # one scale, all panels
    zero = three_runs().assign(relative_change=0.0)
    assert weight_charts.delta_by_layer(zero).layout.yaxis.type == "linear"  # log of 0 is no axis


def test_decade_axis_always_has_two_labelled_decades():
    one = decade_axis([0.01])
    assert list(one["ticktext"]) == ["1e-2", "1e-1"] and one["range"][0] < -2  # the point is off the frame
    wide = decade_axis([2e-5, 0.0, None, float("nan"), 3.0])
    assert wide["ticktext"] == ["1e-5", "1e-4", "1e-3", "1e-2", "1e-1", "1e0", "1e1"]
    assert wide["tickvals"] == pytest.approx([10.0**k for k in range(-5, 2)])
    assert "dtick" not in wide and wide["minor"]["showgrid"]  # minor lines carry no labels
    assert decade_axis([]) == {"type": "log"}


# ---------------------------------------------------------------------------------------------- titles


def test_weights_titles_spell_the_plural_of_each_kind():
    assert weight_charts.plural("bias") == "biases" and weight_charts.plural("weight") == "weights"
    bias = weight_charts.magnitude_distributions(mags("bias"), kind="bias")
    assert bias.layout.title.text == "|b| by module family (biases)"
    weight = weight_charts.magnitude_distributions(mags("weight"), by_layer=True)
    assert weight.layout.title.text == "|w| by module family (weights)"
    for fig in (bias, weight, weight_charts.magnitude_heatmap(mags("bias"), kind="bias")):
        assert "biass" not in json.dumps(fig.to_plotly_json())


def test_magnitude_boxes_label_decades():
    y = weight_charts.magnitude_distributions(mags("weight")).layout.yaxis
    assert y.type == "log" and list(y.ticktext) == ["1e-3", "1e-2", "1e-1", "1e0", "1e1"]


# ---------------------------------------------------------------------------------------------- input labels


def test_every_task_names_its_inputs_as_a_person_reads_them():
    expected = {
        "cola": ("sentence",),
        "sst2": ("sentence",),
        "mrpc": ("sentence 1", "sentence 2"),
        "stsb": ("sentence 1", "sentence 2"),
        "qqp": ("question 1", "question 2"),
        "mnli": ("premise", "hypothesis"),
        "qnli": ("question", "sentence"),
        "rte": ("premise", "hypothesis"),
        "wnli": ("premise", "hypothesis"),
    }
    assert {name: task.input_labels for name, task in glue.TASKS.items()} == expected
    for task in glue.TASKS.values():
        assert len(task.input_labels) == len(task.text_columns), task.name


# ---------------------------------------------------------------------------------------------- example rows


def dev_rows(glue_dir, folder: str) -> list[dict]:
    """The dev file read here with the csv module, independently of tuning.glue."""
    with open(glue_dir / folder / "dev.tsv", encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_split_rows_stream_a_local_split_and_name_a_missing_file(glue_dir, tmp_path):
    rows = glue.split_rows("rte", "validation", glue_dir)
    first = next(rows)
    assert first["sentence1"] == dev_rows(glue_dir, "RTE")[0]["sentence1"] and first["idx"] == 0
    assert glue.TASKS["rte"].label_names[first["label"]] == dev_rows(glue_dir, "RTE")[0]["label"]
    assert sum(1 for _ in rows) + 1 == len(dev_rows(glue_dir, "RTE"))
    (tmp_path / "RTE").mkdir()
    with pytest.raises(glue.GlueError, match=r"RTE[/\\]dev\.tsv"):
        glue.split_rows("rte", "validation", tmp_path)
    with pytest.raises(glue.GlueError, match="no split 'test'"):
        glue.split_rows("rte", "test", glue_dir)


def test_example_rows_are_real_validation_rows_over_both_labels(glue_dir):
    rows = predict.example_rows("rte", 4, glue_dir)
    dev = dev_rows(glue_dir, "RTE")
    assert len(rows) == 4 and [r["label"] for r in rows].count("entailment") == 2  # half of each class
    for r in rows:
        line = dev[r["idx"]]
        assert (*r["texts"], r["label"]) == (line["sentence1"], line["sentence2"], line["label"])
        assert sum(map(len, r["texts"])) <= predict.EXAMPLE_CHARS  # short enough to read at a glance
    assert [r["idx"] for r in rows] == sorted(r["idx"] for r in rows)  # file order


def test_example_rows_single_sentence_and_scores(glue_dir):
    sst = predict.example_rows("sst2", 3, glue_dir)
    dev = dev_rows(glue_dir, "SST-2")
    assert all(len(r["texts"]) == 1 and dev[r["idx"]]["sentence"] == r["texts"][0] for r in sst)
    assert {r["label"] for r in sst} == {"negative", "positive"}
    sts = predict.example_rows("stsb", 5, glue_dir)
    scores = [r["label"] for r in sts]
    assert all(isinstance(s, float) and 0 <= s <= 5 for s in scores)
    assert len({round(s) for s in scores}) == 5  # spread over the similarity scale
    assert scores == pytest.approx([float(dev_rows(glue_dir, "STS-B")[r["idx"]]["score"]) for r in sts])


def test_example_rows_refuse_a_bad_count(glue_dir):
    for bad in (0, -1, 2.5, "3"):
        with pytest.raises(glue.GlueError, match="positive whole number"):
            predict.example_rows("rte", bad, glue_dir)


# ---------------------------------------------------------------------------------------------- registry views


def finished(reg: Registry, config: RunConfig, result: dict) -> int:
    """A run recorded as a worker leaves it: submitted, claimed and succeeded with this result."""
    run_id = submission.submit(reg, config, submitter="test")
    reg.mark_succeeded(run_id, reg.claim(run_id, "test-worker", "cpu"), result)
    return run_id


def scored(metric: str, value: float | None, artifact: bool = True) -> dict:
    """A worker's result that carries just a primary metric (and, as a worker's run does, an artifact folder)."""
    out = {"primary_metric_name": metric, "primary_metric": value, "metrics": {metric: value}, "steps": 1}
    return {**out, "artifact_dir": "/runs/artifact"} if artifact else out


@pytest.fixture
def runs(registry, glue_dir):
    """Succeeded runs on a pair task, a single-sentence task and STS-B, a queued one, one without a score."""
    here = dict(glue_dir=str(glue_dir))
    return {
        "rte": finished(
            registry, RunConfig(task="rte", modules=("layernorm",), layers="5", **here), scored("accuracy", 0.62)
        ),
        "sst2": finished(
            registry, RunConfig(task="sst2", modules=("query",), layers="all", seed=1, **here), scored("accuracy", 0.9)
        ),
        "stsb": finished(
            registry, RunConfig(task="stsb", modules=("layernorm",), layers="5", **here), scored("pearson", None)
        ),
        "queued": submission.submit(registry, RunConfig(task="mrpc", modules=("key",), layers="1"), submitter="test"),
    }


def test_run_pickers_show_each_succeeded_runs_score(registry, runs):
    # Neither a search (it leaves no weights) nor a run without an artifact is offered to load.
    search = RunConfig(task="rte", modules=("layernorm",), layers="4", lr_search=True, max_train=1000)
    finished(registry, search, scored("accuracy", 0.7))
    finished(registry, RunConfig(task="rte", modules=("value",), layers="4"), scored("accuracy", 0.7, artifact=False))
    choices = model_views.scored_run_choices(registry)
    assert choices == [
        (f"#{runs['stsb']} stsb LN@5 seed 0 · pearson n/a", runs["stsb"]),
        (f"#{runs['sst2']} sst2 Q@all seed 1 · accuracy 0.900", runs["sst2"]),
        (f"#{runs['rte']} rte LN@5 seed 0 · accuracy 0.620", runs["rte"]),
    ]


def test_task_inputs_carry_the_human_labels(registry, runs):
    assert predict.task_inputs(registry, runs["rte"]) == {
        "task": "rte",
        "columns": ("sentence1", "sentence2"),
        "labels": ("premise", "hypothesis"),
        "pair": True,
    }
    single = predict.task_inputs(registry, runs["sst2"])
    assert single["labels"] == ("sentence",) and not single["pair"]
    with pytest.raises(ValueError, match="premise"):  # named as the box is, before any model loads
        predict.predict(registry, runs["rte"], "  ", "a hypothesis")


def test_task_examples_read_the_runs_validation_rows(registry, runs, glue_dir):
    found = predict.task_examples(registry, runs["rte"])
    assert (found["task"], found["split"], found["labels"]) == ("rte", "validation", ("premise", "hypothesis"))
    assert found["rows"] == predict.example_rows("rte", predict.EXAMPLE_ROWS, glue_dir)
    assert all(len(r["texts"]) == 2 for r in found["rows"])
    assert all(len(r["texts"]) == 1 for r in predict.task_examples(registry, runs["sst2"], n=3)["rows"])


def test_task_examples_load_no_model(registry, runs, home):
    """In a fresh process: the examples come from the GLUE file, with no torch, transformers or datasets."""
    script = """
import json, sys
from moduletune.app.playground import predict
from moduletune.tasks.registry import Registry
rows = predict.task_examples(Registry(), int(sys.argv[1]))["rows"]
print(json.dumps([len(rows), [m for m in ("torch", "transformers", "datasets") if m in sys.modules]]))
"""
    env = {**os.environ, "MODULETUNE_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", script, str(runs["rte"])], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [predict.EXAMPLE_ROWS, []]


# ---------------------------------------------------------------------------------------------- a real run


@pytest.fixture
def tuned(registry, glue_dir, home):
    """One real tiny fine-tune (RTE, the last layer's LayerNorms) registered as a succeeded run."""
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
    result = fine_tune(config, output_dir=home / "artifact").to_dict()
    return finished(registry, config, result)


def test_a_real_runs_deltas_and_prediction_speak_its_names(registry, tuned):
    deltas = model_views.run_deltas(registry, [tuned])
    assert set(deltas["run_label"]) == {f"#{tuned} rte LN@5 seed 0"}
    fig = weight_charts.delta_by_layer(deltas)
    assert {t.name for t in fig.data} == {f"#{tuned} rte LN@5 seed 0"} and fig.layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="fill in the hypothesis"):
        predict.predict(registry, tuned, "A man is playing a guitar.", "")
