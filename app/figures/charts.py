"""Pure chart functions of the Compare and Runs tabs: registry DataFrames in, Plotly figures out.

Nothing here reads files, a database or a model, so every chart is unit tested on hand-built
frames. Colours are fixed per module family (app.figures.style), labels use the paper's short names
(Q, K, V, AO, FI, FO, LN), and an empty or unfinished frame gives a figure that says so instead of an
error. Tables live in app.figures.tables, the Weights tab's figures in app.weights.charts, the training curves in
app.figures.curves.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from moduletune.app.figures import pooling
from moduletune.app.figures.labels import family_sort_key, layer_sort_key, short_name, task_sort_key
from moduletune.app.figures.pooling import frame
from moduletune.app.figures.style import (
    HEIGHT,
    RUN_COLORS,
    add_references,
    bar_marker,
    empty_figure,
    hover_lr,
    layout,
    mix_note,
    scatter_marker,
    score_range,
)

NO_SEARCHES = "No lr searches yet — tick 'search the learning rate first' in the Experiment tab"


# ---------------------------------------------------------------- 1. scores by family


def score_by_family(runs, task: str, model: str | None = None) -> go.Figure:
    """Mean ± std over seeds of each replicate set (family × layer choice × settings), drawn up from the chance
    level, with the full fine-tuning mean as a reference line; runs that did not learn are marked ✗."""
    d = pooling.finished_runs(runs, task, model)
    title = f"{task}: score by module family" + mix_note(d)
    if d.empty:
        return empty_figure(title)
    pooled = pooling.pool(d)
    chance, full_mean, full_std, mixed, full_failed = pooling.task_references(pooled, task)
    metric = pooled["metric"].mode().iloc[0]
    fig = go.Figure()
    bars = pooled[pooled["group"] != "full"]
    layer_order = sorted(bars["layers"].unique(), key=layer_sort_key) if len(bars) else []
    base = 0.0 if math.isnan(chance) else chance
    for (group, variant), s in bars.groupby(["group", "variant"], sort=False):
        s = s.iloc[np.argsort([layer_order.index(x) for x in s["layers"]], kind="stable")]
        std = s["std"].fillna(0.0).to_numpy()
        name = short_name(group) + (f" ({variant})" if variant else "")
        flags = [pooling.learn_flag(f, k, n) for f, k, n in zip(s["did_not_learn"], s["not_learned"], s["n"])]
        fig.add_trace(
            go.Bar(
                name=name,
                x=s["layers"].tolist(),
                y=(s["mean"] - base).to_numpy(),
                base=base,
                error_y=dict(type="data", array=std, visible=True, thickness=1.2),
                marker=bar_marker(group),
                legendgroup=name,
                text=["✗" if f else "" for f in flags],
                textposition="outside",
                customdata=np.column_stack(
                    [std, s["n"].to_numpy(), s["mean"].to_numpy(), [hover_lr(x) for x in s["lr"]], flags]
                ),
                hovertemplate=(
                    f"<b>{name}</b> @ %{{x}}<br>{metric} %{{customdata[2]:.4f}} ± %{{customdata[0]:.4f}}"
                    "<br>n = %{customdata[1]} · lr %{customdata[3]}<br>%{customdata[4]}<extra></extra>"
                ),
            )
        )
    add_references(fig, chance, full_mean, full_std, full_failed)
    fig.update_xaxes(title_text="layers trained", type="category", categoryorder="array", categoryarray=layer_order)
    tops = (pooled["mean"] + pooled["std"].fillna(0)).tolist() + (pooled["mean"] - pooled["std"].fillna(0)).tolist()
    fig.update_yaxes(title_text=metric, range=score_range(tops, chance, full_mean))
    if mixed:
        title += " (references: the most common settings)"
    return layout(fig, title, barmode="group", legend_title_text="module")


# ---------------------------------------------------------------- 2. efficiency frontier


# What the frontier can be drawn against (peft's method comparison draws accuracy against memory and time too):
# the column of app.figures.pooling.pool, the title's words, the axis title and the hover's text.
FRONTIER_COSTS = {
    "trainable_pct": ("trainable parameters", "trainable parameters (% of model, log)", "trainable %{x:.3g}%"),
    "train_seconds": ("training time", "training time per run (s, log; median of the seeds)", "training %{x:.3g} s"),
    "peak_memory_mb": (
        "peak memory",
        "peak memory per run (MiB, log; process RSS on a CPU, allocated on a GPU)",
        "peak %{x:.4g} MiB",
    ),
}


def efficiency_frontier(
    runs, task: str | None = None, model: str | None = None, cost: str = "trainable_pct"
) -> go.Figure:
    """Seed-mean score (± std) vs a cost (log x: trainable-parameter share, training time or peak memory) per
    replicate set, with the frontier through the means, chance and full fine-tuning; one panel per task."""
    words, axis_title, hover_cost = FRONTIER_COSTS[cost]
    d = pooling.finished_runs(runs, task, model)
    title = f"Efficiency: score vs {words}" + (f" ({task})" if task else "") + mix_note(d)
    pooled = pooling.pool(d)
    if not pooled.empty:
        pooled = pooled[pd.to_numeric(pooled[cost], errors="coerce") > 0]
    if pooled.empty:
        return empty_figure(title)
    tasks = sorted(pooled["task"].unique(), key=task_sort_key)
    cols = min(len(tasks), 3)
    rows = math.ceil(len(tasks) / cols)
    if len(tasks) > 1:
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=tasks, horizontal_spacing=0.07, vertical_spacing=0.12)
    else:
        fig = go.Figure()
    hover = (
        "<b>%{customdata[0]}</b> @ %{customdata[1]}<br>%{customdata[2]} %{y:.4f} ± %{customdata[3]:.4f} "
        f"(n = %{{customdata[4]}})<br>{hover_cost} · lr %{{customdata[5]}}<br>%{{customdata[6]}}<extra></extra>"
    )
    shown = set()  # legend entries already made: one per family (and the frontier) across the panels
    for i, t in enumerate(tasks):
        where = dict(row=i // cols + 1, col=i % cols + 1) if len(tasks) > 1 else {}
        pt = pooled[pooled["task"] == t]
        add_frontier_line(fig, pooling.seed_means_frontier(pt, cost), cost, shown, where)
        for group in sorted(pt["group"].unique(), key=family_sort_key):
            add_family_points(fig, pt[pt["group"] == group], group, cost, hover, shown, where)
        chance, full_mean, full_std, _, full_failed = pooling.task_references(pt, t)
        add_references(fig, chance, full_mean, full_std, full_failed, **where)
        spread = pt["std"].fillna(0)
        fig.update_yaxes(
            title_text=pt["metric"].mode().iloc[0],
            **where,
            range=score_range((pt["mean"] + spread).tolist() + (pt["mean"] - spread).tolist(), chance, full_mean),
        )
    fig.update_xaxes(type="log", title_text=axis_title)
    return layout(fig, title, height=HEIGHT if rows == 1 else 330 * rows, legend_title_text="module")


def add_frontier_line(fig: go.Figure, front, cost: str, shown: set, where: dict) -> None:
    """The frontier through the seed means, a dotted step line (one legend entry for every panel)."""
    fig.add_trace(
        go.Scatter(
            x=front[cost].to_numpy(),
            y=front["mean"].to_numpy(),
            mode="lines",
            line=dict(color="#bbbbbb", dash="dot", shape="hv"),
            name="frontier (seed means)",
            legendgroup="frontier",
            showlegend="frontier" not in shown,
            hoverinfo="skip",
        ),
        **where,
    )
    shown.add("frontier")


def add_family_points(fig: go.Figure, g, group: str, cost: str, hover: str, shown: set, where: dict):
    """One family's replicate sets: seed mean ± std against the cost, with what each point pooled on hover."""
    label = short_name(group)
    flags = [pooling.learn_flag(f, k, n) for f, k, n in zip(g["did_not_learn"], g["not_learned"], g["n"])]
    names = [label + (f" ({v})" if v else "") for v in g["variant"]]
    std = g["std"].fillna(0.0)
    lrs = [hover_lr(x) for x in g["lr"]]
    fig.add_trace(
        go.Scatter(
            x=g[cost].to_numpy(),
            y=g["mean"].to_numpy(),
            mode="markers",
            error_y=dict(type="data", array=std.to_numpy(), visible=True, thickness=1),
            name=label,
            legendgroup=group,
            showlegend=group not in shown,
            marker=scatter_marker(group),
            customdata=np.column_stack([names, g["layers"], g["metric"], std, g["n"], lrs, flags]),
            hovertemplate=hover,
        ),
        **where,
    )
    shown.add(group)


# ---------------------------------------------------------------- 3. layer x module heatmap


def layer_module_heatmap(runs, task: str, model: str | None = None) -> go.Figure:
    """Seed-mean score of single-layer runs as a family x layer grid, coloured from chance (dark) to full
    fine-tuning (bright), so noise around chance never looks like a finding."""
    d = pooling.finished_runs(runs, task, model)
    d = d[d["layers"].str.fullmatch(r"\d+")] if not d.empty else d
    title = f"{task}: one layer at a time" + mix_note(d)
    if d.empty:
        return empty_figure(
            title, "No finished single-layer runs yet — submit one (layers = a single number) in the Experiment tab"
        )
    everything = pooling.pool(pooling.finished_runs(runs, task, model))
    pooled = pooling.pool(d)
    pooled = pooled.assign(
        _row=[short_name(g) + (f" ({v})" if v else "") for g, v in zip(pooled["group"], pooled["variant"])],
        _layer=pooled["layers"].astype(int),
    )
    rows = list(dict.fromkeys(pooled["_row"]))  # pooled is already in paper order
    layers = sorted(pooled["_layer"].unique())
    grid = lambda col: pooled.pivot_table(index="_row", columns="_layer", values=col, aggfunc="first").reindex(  # noqa: E731
        index=rows, columns=layers
    )
    mean, count, flags = grid("mean"), grid("n"), grid("did_not_learn")
    z = [[None if pd.isna(v) else float(v) for v in row] for row in mean.to_numpy()]
    text = [
        ["" if v is None else f"{v:.3f}" + (" ✗" if f is True else "") for v, f in zip(zr, fr)]
        for zr, fr in zip(z, flags.to_numpy())
    ]
    chance, full_mean, _, _, full_failed = pooling.task_references(everything, task)
    values = [v for row in z for v in row if v is not None]
    lo = chance if not math.isnan(chance) else min(values)
    # Up to full FT (or the best cell); never narrower than 0.1, so noise stays one colour.
    hi = max(([] if math.isnan(full_mean) else [full_mean]) + values + [lo + 0.1])
    metric = pooled["metric"].mode().iloc[0]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(x) for x in layers],
            y=rows,
            text=text,
            texttemplate="%{text}",
            customdata=count.fillna(0).astype(int).to_numpy(),
            colorscale="Viridis",
            zmin=lo,
            zmax=hi,
            colorbar=dict(title=dict(text=f"{metric}<br>chance → full FT")),
            hoverongaps=False,
            hovertemplate="%{y} @ layer %{x}<br>" + metric + " %{z:.4f}<br>n = %{customdata}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="layer", type="category")
    fig.update_yaxes(title_text="module", autorange="reversed", type="category")
    note = pooling.reference_note(chance, full_mean, math.nan, metric, full_failed)
    return layout(fig, title + (f" · {note}" if note else ""), height=max(320, 60 + 42 * len(rows)))


# ---------------------------------------------------------------- 5. lr searches


def lr_search_curves(points, title: str = "Learning-rate searches: held-out score vs lr") -> go.Figure:
    """Score vs lr (log) of each search at each rung of its successive halving (earlier rungs dotted), the chosen
    lr starred: whether the grid was wide enough and how sharp the optimum is. `points` has search_id, label,
    lr, score, step, metric and chosen_lr (NaN while the search runs)."""
    d = frame(points)
    if d.empty:
        return empty_figure(title, NO_SEARCHES)
    fig = go.Figure()
    for i, (sid, g) in enumerate(d.groupby("search_id", sort=True)):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        label, steps = str(g["label"].iloc[0]), sorted(g["step"].unique())
        for step in steps:
            r = g[g["step"] == step].sort_values("lr")
            last = bool(step == steps[-1])  # plotly refuses numpy booleans
            fig.add_trace(
                go.Scatter(
                    x=r["lr"].to_numpy(),
                    y=r["score"].to_numpy(),
                    mode="lines+markers",
                    name=label if last else f"{label} · step {step}",
                    legendgroup=str(sid),
                    showlegend=last,
                    line=dict(color=color, dash="solid" if last else "dot", width=2 if last else 1),
                    marker=dict(size=7 if last else 5),
                    hovertemplate=f"{label}<br>lr %{{x:g}} after {step} steps<br>held-out %{{y:.4f}}<extra></extra>",
                )
            )
        chosen = g["chosen_lr"].dropna()
        if len(chosen):
            at = g[(g["lr"] == chosen.iloc[0]) & (g["step"] == steps[-1])]
            fig.add_trace(
                go.Scatter(
                    x=at["lr"].to_numpy(),
                    y=at["score"].to_numpy(),
                    mode="markers",
                    legendgroup=str(sid),
                    showlegend=False,
                    marker=dict(symbol="star", size=16, color=color, line=dict(width=1, color="black")),
                    hovertemplate=f"{label}<br>chosen lr %{{x:g}}<extra></extra>",
                )
            )
    metric = str(d["metric"].dropna().iloc[0]) if d["metric"].notna().any() else "score"
    fig.update_xaxes(type="log", title_text="learning rate (log)", exponentformat="power")
    fig.update_yaxes(title_text=f"held-out {metric}")
    return layout(fig, title, legend_title_text="search")
