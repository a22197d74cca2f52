"""app.study.report on hand-built frames (table, layer-wise figure, |w| vs score, the four exports) and once on a
real registry with the embedded model's magnitudes."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from moduletune.app.figures import style as figure_style
from moduletune.app.figures import tables
from moduletune.app.study import analysis as study_analysis
from moduletune.app.study import report as study
from tests.app.test_charts import run

FAMILIES = ("query", "key", "value", "attention_output", "ffn_intermediate", "ffn_output", "layernorm")


def frame(*rows) -> pd.DataFrame:
    """A runs frame whose replicate keys follow from each row's settings, as Registry.runs_frame makes them."""
    df = pd.DataFrame(list(rows))
    if "settings" not in df.columns:
        df["settings"] = [{} for _ in range(len(df))]
    df["settings"] = [s if isinstance(s, dict) else {} for s in df["settings"]]
    key = lambda s: ",".join(f"{k}={v}" for k, v in sorted(s.items()))  # noqa: E731
    df["settings_key"] = [
        f"{m}|{lay}|{lr}|{key(s)}" for m, lay, lr, s in zip(df["modules"], df["layers"], df["lr"], df["settings"])
    ]
    df["comparison_key"] = [key(s) for s in df["settings"]]
    df["chance_metric"] = df.get("chance_metric", 0.5)
    df["learned"] = df["learned"] if "learned" in df.columns else True
    df["kind"] = "run"
    return df


def magnitudes(layers: int = 2) -> pd.DataFrame:
    """Magnitude rows in which |w| grows in paper order, so LayerNorm has the largest."""
    rows = [
        {
            "family": f,
            "layer": layer,
            "kind": kind,
            "count": 100,
            "mean_abs": (i + 1) * (0.1 if kind == "weight" else 0.01),
        }
        for i, f in enumerate(FAMILIES)
        for layer in range(layers)
        for kind in ("weight", "bias")
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def runs() -> pd.DataFrame:
    """Two seeds of Q, V, LN on all layers and full FT on RTE, one seed on MRPC, and single-layer LN/Q runs."""
    rows, i = [], 0
    for fam, base, pct in (
        ("query", 0.60, 1.2),
        ("value", 0.62, 1.2),
        ("layernorm", 0.66, 0.01),
        ("full", 0.70, 100.0),
    ):
        for seed in (0, 1):
            i += 1
            rows.append(run(i, fam, seed=seed, metric=base + 0.02 * seed, trainable_pct=pct))
    rows.append(run(100, "layernorm", task="mrpc", metric=0.8))
    for layer in (0, 1):
        for seed in (0, 1):
            for fam, base in (("layernorm", 0.61), ("query", 0.55)):
                i += 1
                rows.append(run(i, fam, layers=str(layer), seed=seed, metric=base + 0.01 * layer + 0.02 * seed))
    return frame(*rows)


# ---------------------------------------------------------------- table


def test_table_pools_seeds_with_chance_and_full_rows(runs):
    table = study.study_table(runs)
    assert list(table.columns) == ["module", "trainable %", "lr", "mrpc", "rte"]
    assert table["module"].tolist() == ["Q", "V", "LN", "full", tables.CHANCE_ROW]  # paper order
    ln = table.set_index("module").loc["LN"]
    assert ln["rte"] == "0.670 ± 0.014 (2)" and ln["mrpc"] == "0.800 (1)" and ln["trainable %"] == "0.01%"
    assert ln["lr"] == "0.001"
    assert table.set_index("module").loc["full", "rte"] == "0.710 ± 0.014 (2)"
    assert table.iloc[-1]["rte"] == "0.500"
    assert study.study_table(runs, tasks="mrpc").columns.tolist()[-1] == "mrpc"


def test_table_never_pools_different_settings_and_flags_failures():
    rows = [
        run(1, seed=0, metric=0.6),
        run(2, seed=1, metric=0.62),
        run(3, seed=0, metric=0.5, settings={"max_train": 100}, learned=False),
        run(4, seed=1, metric=0.5, settings={"max_train": 100}, learned=False),
    ]
    rows[0]["settings"] = rows[1]["settings"] = {"max_train": 2000}
    table = study.study_table(frame(*rows)).set_index("module")
    assert table.loc["LN (max_train=2000)", "rte"] == "0.610 ± 0.014 (2)"
    assert table.loc["LN (max_train=100)", "rte"].endswith("✗")
    numeric = study.study_numeric(frame(*rows))
    assert sorted(numeric["n"]) == [2, 2] and numeric["did_not_learn"].tolist().count(True) == 1
    assert list(numeric.columns) == [
        "module",
        "family",
        "layers",
        "variant",
        "task",
        "metric",
        "mean",
        "std",
        "n",
        "trainable_pct",
        "lr",
        "chance",
        "full_mean",
        "did_not_learn",
        "full_failed",
        "lr_verdict",
    ]


# ---------------------------------------------------------------- figures


def test_layerwise_figure_has_error_bars_per_family_and_references(runs):
    fig = study_analysis.layerwise_figure(runs, "rte")
    lines = {t.name: t for t in fig.data}
    assert set(lines) == {"Q", "LN"}
    ln = lines["LN"]
    assert list(ln.x) == [0, 1] and ln.y[0] == pytest.approx(0.62) and ln.y[1] == pytest.approx(0.63)
    assert ln.error_y.array[0] == pytest.approx(0.01414, abs=1e-4) and ln.line.color == figure_style.family_color(
        "layernorm"
    )
    texts = [a.text for a in fig.layout.annotations]
    assert any(t.startswith("chance 0.500") for t in texts) and any("full fine-tuning 0.710" in t for t in texts)
    empty = study_analysis.layerwise_figure(runs, "mrpc")
    assert not empty.data and study_analysis.NO_SINGLE_LAYER in empty.layout.annotations[0].text


def test_efficiency_figure_is_the_frontier(runs):
    fig = study_analysis.efficiency_figure(runs, "rte")
    assert fig.layout.xaxis.type == "log" and any(t.name == "frontier (seed means)" for t in fig.data)


# ---------------------------------------------------------------- magnitudes vs score


def test_largest_weights_and_best_score_give_rho_one():
    rows = [run(i, fam, metric=0.5 + 0.02 * i, seed=0) for i, fam in enumerate(FAMILIES)]
    fig, stats = study_analysis.magnitude_vs_score(frame(*rows), magnitudes(), "rte")
    assert stats["n_families"] == 7 and stats["rho"] == pytest.approx(1.0) and stats["p"] < 0.01
    assert "ρ = 1.00" in fig.layout.title.text and fig.layout.xaxis.type == "log"
    ln = next(t for t in fig.data if t.name == "LN")
    assert ln.x[0] == pytest.approx(0.7) and ln.marker.color == figure_style.family_color("layernorm")


def test_magnitudes_follow_the_layers_trained():
    mags = magnitudes().assign(mean_abs=lambda m: m["mean_abs"] * (1 + m["layer"]))  # layer 1 twice layer 0
    assert study_analysis.family_mean_abs(mags, "layernorm", "all") == pytest.approx(0.7 * 1.5)
    assert study_analysis.family_mean_abs(mags, "layernorm", "1") == pytest.approx(1.4)
    points = study_analysis.magnitude_points(frame(run(1, layers="1"), run(2, "query", layers="1")), mags, "rte", "1")
    assert points.set_index("module")["mean_abs"].to_dict() == pytest.approx({"Q": 0.2, "LN": 1.4})


def test_fewer_than_three_families_leave_rho_undefined():
    fig, stats = study_analysis.magnitude_vs_score(frame(run(1), run(2, "query", metric=0.7)), magnitudes(), "rte")
    assert stats["n_families"] == 2 and math.isnan(stats["rho"]) and math.isnan(stats["p"])
    assert "undefined" in fig.layout.title.text and len(fig.data) == 2
    fig, stats = study_analysis.magnitude_vs_score(frame(run(1)), None, "rte")
    assert stats["n_families"] == 0 and not fig.data


# ---------------------------------------------------------------- report and exports


@pytest.fixture
def report(runs):
    return study.build_report(runs, {"m": magnitudes()})


def test_report_holds_table_figures_and_rho(report, runs):
    assert report.tasks == ["mrpc", "rte"] and report.n_runs == len(runs) and report.generated_at
    assert set(report.figures["rte"]) == set(study.FIGURES) and report.rho["rte"]["n_families"] == 3
    assert report.rho["rte"]["rho"] == pytest.approx(1.0) and report.rho["rte"]["model"] == "m"
    assert report.rho["rte"]["p"] == pytest.approx(1 / 3)  # exact: 2 of the 6 pairings of 3 points are as strong
    assert report.mixed_settings == [] and "LN" in report.table["module"].tolist()


def test_csv_round_trips(report):
    back = pd.read_csv(io.StringIO(study.to_csv(report)))
    assert len(back) == len(report.numeric) and set(back["task"]) == {"rte", "mrpc"}
    assert back.set_index(["module", "task"]).loc[("LN", "rte"), "mean"] == pytest.approx(0.67)


def test_markdown_and_latex(report):
    md = study.to_markdown(report)
    assert "| module | trainable % | lr | mrpc | rte |" in md and "arXiv 2302.00378" in md and "ρ = 1.00" in md
    tex = study.to_latex(report)
    assert r"\begin{tabular}" in tex and r"\toprule" in tex and r"0.670 $\pm$ 0.014 (2)" in tex
    assert r"trainable \%" in tex and "±" not in tex.split(r"\begin{tabular}")[1]


def test_html_is_self_contained(report):
    page = study.to_html(report)
    assert page.count("* plotly.js v") == 1  # the library, inline, once
    assert "cdn.plot.ly" not in page and "<script src=" not in page
    assert page.count('class="plotly-graph-div"') == 2 * len(study.FIGURES)
    assert "<h1>Module tuning study</h1>" in page and "Akbar-Tajari" in page and "ρ = 1.00" in page
    assert "0.670 ± 0.014 (2)" in page


def test_write_report_checks_the_format(report, tmp_path):
    for fmt in study.FORMATS:
        assert study.write_report(report, fmt, tmp_path / f"study.{fmt}").stat().st_size > 0
    with pytest.raises(ValueError, match="allowed: csv, md, tex, html"):
        study.write_report(report, "pdf", tmp_path / "study.pdf")


# ---------------------------------------------------------------- a real registry


def test_report_from_a_registry_with_real_magnitudes(registry):
    from moduletune.tuning.config import RunConfig
    from tests.app.test_views import record

    for fam, metric in (("value", 0.55), ("query", 0.57), ("layernorm", 0.6), ("full", 0.65)):
        record(registry, RunConfig(task="rte", modules=(fam,), layers="all"), metric=metric)
    report = study.report_from_registry(registry)
    stats = report.rho["rte"]
    assert report.n_runs == 4 and stats["model"] == "all-MiniLM-L6-v2" and stats["n_families"] == 3
    points = report.points["rte"].set_index("module")["mean_abs"]
    # The paper's observation on the real pre-trained weights: LN's |w| ~0.6, Q's ~0.07, V's ~0.05.
    assert points["LN"] > 5 * points["Q"] > 5 * points["V"] and stats["rho"] == pytest.approx(1.0)
