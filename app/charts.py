"""Pure chart functions: registry DataFrames in, Plotly figures (or display tables) out.

Nothing here reads files, a database or a model, so every chart is unit tested on hand-built
frames. Colours are fixed per module family, labels use the paper's short names (Q, K, V, AO,
FI, FO, LN), and an empty or unfinished frame gives a figure that says so instead of an error.
"""
from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

NO_RUNS = "No finished runs yet — submit one in the Experiment tab"
NO_EVENTS = "No training progress yet — submit a run in the Experiment tab"
NO_MAGNITUDES = "No weight-magnitude statistics yet — compute them for a model first"
TEMPLATE = "plotly_white"
HEIGHT = 450
UIREVISION = "moduletune-curves"  # constant so zoom and legend clicks survive live refreshes

GLUE_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
FAMILY_ORDER = (
    "query", "key", "value", "attention_output", "ffn_intermediate", "ffn_output", "layernorm",
    "bias", "embeddings", "classifier",
)
SHORT = {
    "query": "Q", "key": "K", "value": "V", "attention_output": "AO", "ffn_intermediate": "FI",
    "ffn_output": "FO", "layernorm": "LN", "bias": "bias", "embeddings": "embeddings",
    "classifier": "classifier", "full": "full",
}
FAMILY_COLORS = {
    "query": "#1f77b4", "key": "#17becf", "value": "#2ca02c", "attention_output": "#d62728",
    "ffn_intermediate": "#9467bd", "ffn_output": "#8c564b", "layernorm": "#ff7f0e",
    "bias": "#bcbd22", "embeddings": "#e377c2", "classifier": "#393b79", "full": "#222222",
}
RANDOM_COLOR = "#a3a3a3"  # random:<family> controls: grey, hatched bars, open markers, dotted lines
COMBO_COLORS = ("#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1")
RUN_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
)
QUANTILE_COLUMNS = ("q05", "q25", "q50", "q75", "q95")
LOG_FLOOR = 1e-6  # smallest |w| drawn on a log axis (the magnitudes histogram's first edge)


# ---------------------------------------------------------------- names, order, colours


def _family_rank(family: str) -> int:
    """Position of a single family in the paper's order (unknown names go last)."""
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


def canonical_modules(modules) -> str:
    """One key per module set: parts sorted in paper order, so 'value+query' and 'query+value' agree."""
    if modules is None or (isinstance(modules, float) and math.isnan(modules)):
        return "?"
    if isinstance(modules, (list, tuple)):
        parts = [str(p) for p in modules]
    else:
        parts = str(modules).split("+")
    parts = [p.strip() for p in parts if p.strip()]
    if len(parts) == 1:
        return parts[0]
    return "+".join(sorted(parts, key=lambda p: (_family_rank(p), p)))


def short_name(modules) -> str:
    """The paper's label for a module set: 'query+value' -> 'Q+V', 'random:layernorm' -> 'random:LN'."""
    key = canonical_modules(modules)
    if key.startswith("random:"):
        return "random:" + SHORT.get(key.split(":", 1)[1], key.split(":", 1)[1])
    return "+".join(SHORT.get(p, p) for p in key.split("+"))


def family_sort_key(modules) -> tuple:
    """Row order of the paper's tables: Q K V AO FI FO LN bias embeddings classifier, combos, random:*, full."""
    key = canonical_modules(modules)
    if key in FAMILY_ORDER:
        return (0, _family_rank(key), key)
    if key.startswith("random:"):
        return (2, _family_rank(key.split(":", 1)[1]), key)
    if key == "full":
        return (3, 0, key)
    return (1, _family_rank(key.split("+")[0]), key)


def family_color(modules) -> str:
    """The fixed colour of a module set; random controls are grey and combinations get a stable extra colour."""
    key = canonical_modules(modules)
    if key.startswith("random"):
        return RANDOM_COLOR
    if key in FAMILY_COLORS:
        return FAMILY_COLORS[key]
    return COMBO_COLORS[zlib.crc32(key.encode()) % len(COMBO_COLORS)]


def _is_random(modules) -> bool:
    """True for the lottery-ticket control random:<family>."""
    return canonical_modules(modules).startswith("random")


def _layer_sort_key(spec) -> tuple:
    """Layer specs in a readable order: all, single layers by number, then the rest alphabetically."""
    spec = str(spec)
    if spec == "all":
        return (0, 0, spec)
    if spec.isdigit():
        return (1, int(spec), spec)
    return (2, 0, spec)


def _task_sort_key(task) -> tuple:
    """GLUE tasks in the benchmark's usual order, anything else after, alphabetically."""
    return (GLUE_ORDER.index(task) if task in GLUE_ORDER else len(GLUE_ORDER), str(task))


def _id_key(run_id) -> tuple:
    """Sort run ids numerically when they are numbers."""
    return (0, int(run_id), "") if isinstance(run_id, (int, np.integer)) else (1, 0, str(run_id))


def _layer_label(layer: int) -> str:
    """Axis label of a magnitudes layer index (-1 holds the embeddings)."""
    return "emb" if int(layer) < 0 else str(int(layer))


# ---------------------------------------------------------------- formatting


def humanize_seconds(seconds) -> str:
    """A duration as a person reads it: '45s', '3m 20s', '2h 5m', '1d 3h'; '' when unknown."""
    if seconds is None or pd.isna(seconds):
        return ""
    s = max(int(round(float(seconds))), 0)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m}m"
    d, h = divmod(h, 24)
    return f"{d}d {h}h"


def humanize_age(seconds) -> str:
    """How long ago something happened: 'just now', '40 s ago', '5 min ago', '3 h ago', '2 days ago'."""
    if seconds is None or pd.isna(seconds):
        return ""
    s = float(seconds)
    if s < 10:
        return "just now"
    if s < 60:
        return f"{int(s)} s ago"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 86400:
        return f"{int(s // 3600)} h ago"
    days = int(s // 86400)
    return "1 day ago" if days == 1 else f"{days} days ago"


def format_pct(value) -> str:
    """A trainable share in percent with three significant digits: '0.00312%', '12.3%', '100%'."""
    if value is None or pd.isna(value):
        return ""
    return f"{float(value):.3g}%"


def _format_count(value) -> str:
    """An integer parameter count with thousands separators ('?' when unknown)."""
    if value is None or pd.isna(value):
        return "?"
    return f"{int(value):,}"


def _cell(value) -> str:
    """One config value as display text: lists joined by commas, missing as ''."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


# ---------------------------------------------------------------- frame helpers


def _frame(df) -> pd.DataFrame:
    """The frame itself, or an empty one for None, so every chart can start with `.empty`."""
    return pd.DataFrame() if df is None else df


def _str_col(df: pd.DataFrame, name: str, default: str) -> pd.Series:
    """A column as strings, or the default everywhere when the registry lacks it."""
    if name in df.columns:
        return df[name].astype(object).where(df[name].notna(), default).astype(str)
    return pd.Series(default, index=df.index, dtype=object)


def _module_keys(df: pd.DataFrame) -> pd.Series:
    """Canonical module-set key per run (the `modules` column, else `family`)."""
    source = df["modules"] if "modules" in df.columns else df.get("family")
    if source is None:
        return pd.Series("?", index=df.index, dtype=object)
    cache: dict = {}

    def key(v) -> str:
        """canonical_modules, computed once per distinct string (a registry repeats a few values)."""
        if not isinstance(v, str):
            return canonical_modules(v)
        if v not in cache:
            cache[v] = canonical_modules(v)
        return cache[v]

    return source.astype(object).map(key)


def finished_runs(runs, task: str | None = None, model: str | None = None) -> pd.DataFrame:
    """Succeeded runs with a metric (optionally of one task/model), plus `group` and `layers` as strings."""
    runs = _frame(runs)
    if runs.empty or not {"status", "primary_metric"} <= set(runs.columns):
        return pd.DataFrame(columns=["id", "task", "group", "layers", "primary_metric"])
    mask = (runs["status"] == "succeeded") & pd.to_numeric(runs["primary_metric"], errors="coerce").notna()
    if task is not None and "task" in runs.columns:
        mask &= runs["task"] == task
    if model is not None and "model" in runs.columns:
        mask &= runs["model"] == model
    out = runs.loc[mask].copy()
    out["primary_metric"] = pd.to_numeric(out["primary_metric"], errors="coerce").astype(float)
    out["group"] = _module_keys(out)
    out["layers"] = _str_col(out, "layers", "all")
    if "task" not in out.columns:
        out["task"] = task or "?"
    return out


def _metric_name(df: pd.DataFrame, default: str = "score") -> str:
    """The primary metric's name for these runs (the most common one; `default` when unknown)."""
    if "primary_metric_name" not in df.columns:
        return default
    names = df["primary_metric_name"].dropna()
    return str(names.mode().iloc[0]) if len(names) else default


def _layout(fig: go.Figure, title: str, height: int = HEIGHT, **kwargs) -> go.Figure:
    """The shared look: white template, a left-aligned title, a readable height and margins."""
    fig.update_layout(
        template=TEMPLATE, title=dict(text=title, x=0.01), height=height,
        margin=dict(l=60, r=30, t=70, b=55), **kwargs,
    )
    return fig


def empty_figure(title: str, message: str = NO_RUNS, height: int = HEIGHT) -> go.Figure:
    """A blank chart that explains why it is blank, so the UI never shows an error or a bare axis."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=15, color="#666666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height)


def _bar_marker(group: str) -> dict:
    """Bar style of a family: its colour; random controls grey with a hatch."""
    marker = dict(color=family_color(group))
    if _is_random(group):
        marker["pattern"] = dict(shape="/", fgcolor="#555555")
    return marker


def _scatter_marker(group: str) -> dict:
    """Marker style of a family: its colour; random controls as open grey diamonds."""
    if _is_random(group):
        return dict(color=RANDOM_COLOR, symbol="diamond-open", size=9, line=dict(width=2))
    return dict(color=family_color(group), size=9, line=dict(width=0.5, color="white"))


# ---------------------------------------------------------------- 1. scores by family


def score_by_family(runs, task: str, model: str | None = None) -> go.Figure:
    """Mean ± std (over seeds) of the task's primary metric per family, grouped by layer choice, vs full FT."""
    title = f"{task}: score by module family"
    d = finished_runs(runs, task, model)
    if d.empty:
        return empty_figure(title)
    metric = _metric_name(d)
    fig = go.Figure()
    bars = d[d["group"] != "full"]
    stats = (bars.groupby(["group", "layers"], sort=False)["primary_metric"]
             .agg(["mean", "std", "count"]).reset_index())
    layer_order = sorted(stats["layers"].unique(), key=_layer_sort_key)
    for group in sorted(stats["group"].unique(), key=family_sort_key):
        s = stats[stats["group"] == group]
        s = s.iloc[np.argsort([layer_order.index(x) for x in s["layers"]], kind="stable")]
        std = s["std"].fillna(0.0).to_numpy()
        fig.add_trace(go.Bar(
            name=short_name(group), x=s["layers"].tolist(), y=s["mean"].to_numpy(),
            error_y=dict(type="data", array=std, visible=True, thickness=1.2),
            marker=_bar_marker(group), legendgroup=group,
            customdata=np.column_stack([std, s["count"].to_numpy()]),
            hovertemplate=(f"<b>{short_name(group)}</b> @ %{{x}}<br>{metric} %{{y:.4f}} ± %{{customdata[0]:.4f}}"
                           "<br>n = %{customdata[1]}<extra></extra>"),
        ))
    full = d.loc[d["group"] == "full", "primary_metric"]
    if len(full):
        fig.add_hline(y=float(full.mean()), line_dash="dash", line_color=FAMILY_COLORS["full"],
                      annotation_text="full fine-tuning", annotation_position="top right")
    fig.update_xaxes(title_text="layers trained", type="category",
                     categoryorder="array", categoryarray=layer_order)
    fig.update_yaxes(title_text=metric)
    return _layout(fig, title, barmode="group", legend_title_text="module")


# ---------------------------------------------------------------- 2. efficiency frontier


def _pareto(points: pd.DataFrame) -> pd.DataFrame:
    """The runs no other run beats with fewer trainable parameters (the efficiency frontier)."""
    p = points.sort_values(["trainable_pct", "primary_metric"], ascending=[True, False])
    best = p["primary_metric"].cummax()
    keep = p["primary_metric"] >= best  # equal to the running max: nothing cheaper does better
    keep &= ~p["primary_metric"].duplicated()  # ties: the cheapest only
    return p[keep]


def efficiency_frontier(runs, task: str | None = None, model: str | None = None) -> go.Figure:
    """Score vs trainable-parameter share (log x) per succeeded run, coloured by family; one panel per task."""
    title = "Efficiency: score vs trainable parameters" + (f" ({task})" if task else "")
    d = finished_runs(runs, task, model)
    if not d.empty and "trainable_pct" in d.columns:
        d = d[pd.to_numeric(d["trainable_pct"], errors="coerce") > 0]
    if d.empty or "trainable_pct" not in d.columns:
        return empty_figure(title)
    d = d.assign(trainable_pct=pd.to_numeric(d["trainable_pct"], errors="coerce").astype(float))
    tasks = sorted(d["task"].unique(), key=_task_sort_key)
    cols = min(len(tasks), 3)
    rows = math.ceil(len(tasks) / cols)
    if len(tasks) > 1:
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=tasks,
                            horizontal_spacing=0.07, vertical_spacing=0.12)
    else:
        fig = go.Figure()
    hover = ("<b>#%{customdata[0]}</b> %{customdata[1]} @ %{customdata[2]}<br>seed %{customdata[3]}"
             "<br>%{customdata[5]} %{y:.4f}<br>trainable %{customdata[4]} (%{x:.3g}%)<extra></extra>")
    ids = d["id"] if "id" in d.columns else pd.Series(d.index, index=d.index)
    d = d.assign(
        _id=ids.astype(object), _label=d["group"].map(short_name), _seed=_str_col(d, "seed", "?"),
        _params=d["trainable_params"].map(_format_count) if "trainable_params" in d.columns else "?",
        _metric=_str_col(d, "primary_metric_name", "score"),
    )
    shown = set()
    for i, t in enumerate(tasks):
        where = dict(row=i // cols + 1, col=i % cols + 1) if len(tasks) > 1 else {}
        dt = d[d["task"] == t]
        front = _pareto(dt)
        fig.add_trace(go.Scatter(
            x=front["trainable_pct"].to_numpy(), y=front["primary_metric"].to_numpy(), mode="lines",
            line=dict(color="#bbbbbb", dash="dot", shape="hv"), name="frontier", legendgroup="frontier",
            showlegend="frontier" not in shown, hoverinfo="skip",
        ), **where)
        shown.add("frontier")
        for group in sorted(dt["group"].unique(), key=family_sort_key):
            g = dt[dt["group"] == group]
            fig.add_trace(go.Scatter(
                x=g["trainable_pct"].to_numpy(), y=g["primary_metric"].to_numpy(), mode="markers",
                name=short_name(group), legendgroup=group, showlegend=group not in shown,
                marker=_scatter_marker(group),
                customdata=g[["_id", "_label", "layers", "_seed", "_params", "_metric"]].to_numpy(),
                hovertemplate=hover,
            ), **where)
            shown.add(group)
        metric = _metric_name(dt)
        fig.update_yaxes(title_text=metric, **where)
    fig.update_xaxes(type="log", title_text="trainable parameters (% of model, log)")
    return _layout(fig, title, height=HEIGHT if rows == 1 else 330 * rows, legend_title_text="module")


# ---------------------------------------------------------------- 3. layer x module heatmap


def layer_module_heatmap(runs, task: str, model: str | None = None) -> go.Figure:
    """Mean score of single-layer runs as a family x layer grid: which layer of which module matters."""
    title = f"{task}: one layer at a time"
    d = finished_runs(runs, task, model)
    d = d[d["layers"].str.fullmatch(r"\d+")] if not d.empty else d
    if d.empty:
        return empty_figure(title, "No finished single-layer runs yet — submit one (layers = a single number) "
                                   "in the Experiment tab")
    d = d.assign(_layer=d["layers"].astype(int))
    stats = d.groupby(["group", "_layer"])["primary_metric"].agg(["mean", "count"])
    groups = sorted(stats.index.get_level_values(0).unique(), key=family_sort_key)
    layers = sorted(stats.index.get_level_values(1).unique())
    mean = stats["mean"].unstack("_layer").reindex(index=groups, columns=layers)
    count = stats["count"].unstack("_layer").reindex(index=groups, columns=layers)
    z = [[None if pd.isna(v) else float(v) for v in row] for row in mean.to_numpy()]
    text = [["" if v is None else f"{v:.3f}" for v in row] for row in z]
    metric = _metric_name(d)
    fig = go.Figure(go.Heatmap(
        z=z, x=[str(x) for x in layers], y=[short_name(g) for g in groups], text=text, texttemplate="%{text}",
        customdata=count.fillna(0).astype(int).to_numpy(), colorscale="Viridis",
        colorbar=dict(title=dict(text=metric)), hoverongaps=False,
        hovertemplate="%{y} @ layer %{x}<br>" + metric + " %{z:.4f}<br>n = %{customdata}<extra></extra>",
    ))
    fig.update_xaxes(title_text="layer", type="category")
    fig.update_yaxes(title_text="module", autorange="reversed", type="category")
    return _layout(fig, title, height=max(320, 60 + 42 * len(groups)))


# ---------------------------------------------------------------- 4. training curves


def _eval_metric_rows(ev: pd.DataFrame, metric: str | None) -> pd.DataFrame:
    """One run's eval rows of its primary metric (MNLI-style 'accuracy' on split '*_matched' counts too)."""
    if ev.empty:
        return ev
    if metric:
        suffix = ev["split"].astype(str).str.extract(r"^validation_(.+)$", expand=False)
        pick = ev[(ev["name"] == metric) | ((ev["name"] + "_" + suffix) == metric)]
        if not pick.empty:
            ev = pick
    first_name = ev["name"].iloc[0]
    first_split = sorted(ev.loc[ev["name"] == first_name, "split"].astype(str).unique())[0]
    return ev[(ev["name"] == first_name) & (ev["split"].astype(str) == first_split)]


def training_curves(events, run_ids: Sequence[int] | None = None, runs=None) -> go.Figure:
    """Training loss (top) and eval primary metric (bottom) vs step for the chosen runs, zoom kept across refreshes."""
    title = "Training curves"
    events = _frame(events)
    need = {"run_id", "step", "split", "name", "value"}
    if events.empty or not need <= set(events.columns):
        return empty_figure(title, NO_EVENTS).update_layout(uirevision=UIREVISION)
    if run_ids is not None:
        events = events[events["run_id"].isin(list(run_ids))]
    if events.empty:
        return empty_figure(title, NO_EVENTS).update_layout(uirevision=UIREVISION)
    info: dict = {}
    runs = _frame(runs)
    if not runs.empty and "id" in runs.columns:
        keys = _module_keys(runs)
        layers = _str_col(runs, "layers", "all")
        names = _str_col(runs, "primary_metric_name", "")
        for rid, key, lay, name in zip(runs["id"], keys, layers, names):
            info[rid] = (f"#{rid} {short_name(key)}@{lay}", name or None)
    is_train = events["split"] == "train"
    losses = dict(tuple(events[is_train & (events["name"] == "loss")].groupby("run_id")))
    evals = dict(tuple(events[~is_train & ~events["name"].isin(["loss", "lr", "examples_per_second"])]
                       .groupby("run_id")))
    order = list(run_ids) if run_ids is not None else sorted(events["run_id"].unique())
    order = [r for r in dict.fromkeys(order) if r in losses or r in evals]
    if not order:
        return empty_figure(title, NO_EVENTS).update_layout(uirevision=UIREVISION)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=("training loss", "evaluation"))
    loss_traces, eval_traces, metric_names = [], [], set()
    for i, rid in enumerate(order):
        label, metric = info.get(rid, (f"#{rid}", None))
        line = dict(color=RUN_COLORS[i % len(RUN_COLORS)], width=1.6)
        train = losses.get(rid)
        if train is not None:
            train = train.sort_values("step")
            loss_traces.append(go.Scatter(
                x=train["step"].to_numpy(), y=train["value"].to_numpy(), mode="lines", name=label,
                legendgroup=str(rid), line=line,
                hovertemplate=f"{label}<br>step %{{x}}<br>loss %{{y:.4f}}<extra></extra>",
            ))
        ev = _eval_metric_rows(evals.get(rid, events.iloc[0:0]), metric).sort_values("step")
        if not ev.empty:
            name = metric or str(ev["name"].iloc[0])
            metric_names.add(name)
            eval_traces.append(go.Scatter(
                x=ev["step"].to_numpy(), y=ev["value"].to_numpy(), mode="lines+markers", name=label,
                legendgroup=str(rid), showlegend=train is None, line=line, marker=dict(size=6),
                hovertemplate=f"{label}<br>step %{{x}}<br>{name} %{{y:.4f}}<extra></extra>",
            ))
    fig.add_traces(loss_traces + eval_traces,
                   rows=[1] * len(loss_traces) + [2] * len(eval_traces),
                   cols=[1] * (len(loss_traces) + len(eval_traces)))
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text=metric_names.pop() if len(metric_names) == 1 else "eval metric", row=2, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    return _layout(fig, title, height=620, uirevision=UIREVISION, legend_title_text="run")


# ---------------------------------------------------------------- 5. config diff


def _flatten(d: Mapping, prefix: str = "") -> dict:
    """Nested config dicts as dotted keys: {'extra': {'note': 1}} -> {'extra.note': 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(runs, only_differences: bool = True, run_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """Settings side by side: a 'setting' column, then one '#id' column per run; only differing rows by default."""
    runs = _frame(runs)
    if not runs.empty and run_ids is not None and "id" in runs.columns:
        runs = runs[runs["id"].isin(list(run_ids))]
    if runs.empty:
        return pd.DataFrame(columns=["setting"])
    ids = runs["id"].tolist() if "id" in runs.columns else list(runs.index)
    use_config = "config" in runs.columns and runs["config"].map(lambda c: isinstance(c, Mapping)).any()
    if use_config:
        flat = [_flatten(c) if isinstance(c, Mapping) else {} for c in runs["config"]]
    else:
        cols = [c for c in runs.columns if c not in ("id", "config")]
        flat = [dict(zip(cols, row)) for row in runs[cols].itertuples(index=False, name=None)]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    missing = object()
    rows = []
    for key in keys:
        raw = [f.get(key, missing) for f in flat]
        same = len({json.dumps(_cell(v) if v is not missing else None) for v in raw}) == 1
        if only_differences and len(flat) > 1 and same:
            continue
        rows.append([key] + ["" if v is missing else _cell(v) for v in raw])
    return pd.DataFrame(rows, columns=["setting"] + [f"#{i}" for i in ids])


# ---------------------------------------------------------------- 6. results table


def _global_family(group: str) -> bool:
    """Families that ignore the layer spec (their runs count under any layer filter)."""
    return group in ("embeddings", "classifier", "full")


def results_table_numeric(runs, layers: str | None = "all", model: str | None = None) -> pd.DataFrame:
    """Long numeric results (module, family, task, metric, mean, std, n, trainable_pct) for CSV export."""
    columns = ["module", "family", "task", "metric", "mean", "std", "n", "trainable_pct"]
    d = finished_runs(runs, None, model)
    if not d.empty and layers is not None:
        d = d[(d["layers"] == str(layers)) | d["group"].map(_global_family)]
    if d.empty:
        return pd.DataFrame(columns=columns)
    if "primary_metric_name" not in d.columns:
        d = d.assign(primary_metric_name="score")
    stats = (d.groupby(["group", "task"])
             .agg(metric=("primary_metric_name", lambda s: _metric_name(s.to_frame())),
                  mean=("primary_metric", "mean"), std=("primary_metric", "std"), n=("primary_metric", "size"))
             .reset_index())
    if "trainable_pct" in d.columns:
        pct = pd.to_numeric(d["trainable_pct"], errors="coerce").groupby(d["group"]).median()
        stats["trainable_pct"] = stats["group"].map(pct)
    else:
        stats["trainable_pct"] = np.nan
    stats["module"] = stats["group"].map(short_name)
    stats = stats.rename(columns={"group": "family"})
    stats["n"] = stats["n"].astype(int)
    keys = [(family_sort_key(f), _task_sort_key(t)) for f, t in zip(stats["family"], stats["task"])]
    stats = stats.iloc[sorted(range(len(keys)), key=keys.__getitem__)]
    return stats[columns].reset_index(drop=True)


def _result_cell(mean: float, std: float, n: int) -> str:
    """'0.812 ± 0.004 (3)'; a single seed has no spread, so just '0.812 (1)'."""
    if n <= 1 or pd.isna(std):
        return f"{mean:.3f} ({n})"
    return f"{mean:.3f} ± {std:.3f} ({n})"


def results_table(runs, layers: str | None = "all", model: str | None = None) -> pd.DataFrame:
    """The paper-style table: one row per module (paper order), 'trainable %', then 'mean ± std (n)' per task."""
    long = results_table_numeric(runs, layers, model)
    if long.empty:
        return pd.DataFrame(columns=["module", "trainable %"])
    tasks = sorted(long["task"].unique(), key=_task_sort_key)
    families = list(dict.fromkeys(long["family"]))  # already in paper order
    cells = {(f, t): _result_cell(m, s, n)
             for f, t, m, s, n in long[["family", "task", "mean", "std", "n"]].itertuples(index=False, name=None)}
    pct = long.drop_duplicates("family").set_index("family")["trainable_pct"]
    rows = [[short_name(f), format_pct(pct.get(f))] + [cells.get((f, t), "") for t in tasks] for f in families]
    return pd.DataFrame(rows, columns=["module", "trainable %"] + tasks)


def results_csv(runs, layers: str | None = "all", model: str | None = None) -> str:
    """The numeric results as CSV text (what the Download button serves)."""
    return results_table_numeric(runs, layers, model).to_csv(index=False)


# ---------------------------------------------------------------- 7-8. magnitudes


def _magnitude_rows(mags, kind: str) -> pd.DataFrame:
    """Magnitude rows of one kind ('weight' or 'bias') with the columns the charts need."""
    mags = _frame(mags)
    need = {"family", "layer", "mean_abs"}
    if mags.empty or not need <= set(mags.columns):
        return pd.DataFrame(columns=sorted(need))
    return mags[mags["kind"] == kind] if "kind" in mags.columns else mags


def _pooled_quantiles(m: pd.DataFrame) -> pd.DataFrame:
    """Per family: count-weighted mean of each layer's |w| quantiles and mean (a pooled summary over layers)."""
    cols = [c for c in (*QUANTILE_COLUMNS, "mean_abs") if c in m.columns]
    w = pd.to_numeric(m["count"], errors="coerce").fillna(1.0) if "count" in m.columns else pd.Series(1.0,
                                                                                                    index=m.index)
    weighted = m[cols].astype(float).mul(w, axis=0).groupby(m["family"]).sum()
    return weighted.div(w.groupby(m["family"]).sum(), axis=0)


def magnitude_distributions(mags, kind: str = "weight", by_layer: bool = False) -> go.Figure:
    """Boxes of |w| per family (whiskers 5%/95%, box 25/50/75%) on a log axis: LayerNorm's scale stands out."""
    title = f"|{'w' if kind == 'weight' else 'b'}| by module family ({kind}s)"
    m = _magnitude_rows(mags, kind)
    if m.empty or not set(QUANTILE_COLUMNS) <= set(m.columns):
        return empty_figure(title, NO_MAGNITUDES)
    fig = go.Figure()
    families = sorted(m["family"].unique(), key=family_sort_key)

    def box(group: str, x, q: pd.DataFrame, **kw) -> go.Box:
        """One family's precomputed boxes (values floored for the log axis)."""
        f = lambda c: np.maximum(q[c].astype(float).to_numpy(), LOG_FLOOR)  # noqa: E731
        return go.Box(
            name=short_name(group), x=x, q1=f("q25"), median=f("q50"), q3=f("q75"),
            lowerfence=f("q05"), upperfence=f("q95"),
            mean=f("mean_abs") if "mean_abs" in q.columns else None,
            marker_color=family_color(group), line_color=family_color(group),
            fillcolor=family_color(group), opacity=0.75, **kw,
        )

    if by_layer:
        for group in families:
            q = m[m["family"] == group].sort_values("layer")
            fig.add_trace(box(group, [_layer_label(v) for v in q["layer"]], q))
        layer_order = [_layer_label(v) for v in sorted(m["layer"].astype(int).unique())]
        fig.update_xaxes(title_text="layer", type="category", categoryorder="array", categoryarray=layer_order)
        fig.update_layout(boxmode="group")
    else:
        pooled = _pooled_quantiles(m)
        for group in families:
            fig.add_trace(box(group, [short_name(group)], pooled.loc[[group]]))
        fig.update_xaxes(title_text="module family", type="category")
    fig.update_yaxes(type="log", title_text=f"|{kind}| (log scale)")
    return _layout(fig, title, legend_title_text="module")


def magnitude_heatmap(mags, kind: str = "weight") -> go.Figure:
    """Mean |w| per family x layer as log10 colours with readable tick labels: where the large weights sit."""
    title = f"Mean |{kind}| by layer and module"
    m = _magnitude_rows(mags, kind)
    if m.empty:
        return empty_figure(title, NO_MAGNITUDES)
    mean = m.groupby(["family", "layer"])["mean_abs"].mean().unstack("layer")
    families = sorted(mean.index, key=family_sort_key)
    layers = sorted(int(v) for v in mean.columns)
    mean = mean.reindex(index=families, columns=layers)
    values = mean.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(values > 0, np.log10(values), np.nan)
    z = [[None if np.isnan(v) else float(v) for v in row] for row in logs]
    text = [["" if np.isnan(v) else f"{v:.2g}" for v in row] for row in values]
    finite = logs[np.isfinite(logs)]
    ticks = list(range(math.floor(finite.min()), math.ceil(finite.max()) + 1)) if finite.size else []
    fig = go.Figure(go.Heatmap(
        z=z, x=[_layer_label(v) for v in layers], y=[short_name(f) for f in families], text=text,
        texttemplate="%{text}", colorscale="Magma", hoverongaps=False,
        colorbar=dict(title=dict(text=f"mean |{kind}|"), tickvals=ticks, ticktext=[f"1e{t}" for t in ticks]),
        hovertemplate="%{y} @ layer %{x}<br>mean |" + kind + "| %{text}<extra></extra>",
    ))
    fig.update_xaxes(title_text="layer", type="category")
    fig.update_yaxes(title_text="module", type="category", autorange="reversed")
    return _layout(fig, title, height=max(320, 60 + 42 * len(families)))


# ---------------------------------------------------------------- 9. deltas


def delta_by_layer(deltas, kind: str | None = None) -> go.Figure:
    """Relative change ||Δw||/||w|| per layer, one line per (run, family); bias tensors dotted."""
    title = "How far tuning moved each module"
    d = _frame(deltas)
    need = {"run_id", "family", "layer", "relative_change"}
    if d.empty or not need <= set(d.columns):
        return empty_figure(title)
    if kind is not None and "kind" in d.columns:
        d = d[d["kind"] == kind]
    if d.empty:
        return empty_figure(title)
    if "kind" not in d.columns:
        d = d.assign(kind="weight")
    several_kinds = d["kind"].nunique() > 1
    fig = go.Figure()
    keys = sorted(d[["run_id", "family", "kind"]].drop_duplicates().itertuples(index=False, name=None),
                  key=lambda t: (_id_key(t[0]), family_sort_key(t[1]), str(t[2])))
    for run_id, family, k in keys:
        g = d[(d["run_id"] == run_id) & (d["family"] == family) & (d["kind"] == k)].sort_values("layer")
        label = f"#{run_id} {short_name(family)}" + (f" ({k})" if several_kinds else "")
        fig.add_trace(go.Scatter(
            x=g["layer"].astype(int).to_numpy(), y=g["relative_change"].astype(float).to_numpy(),
            mode="lines+markers", name=label, legendgroup=f"{run_id}",
            line=dict(color=family_color(family), dash="dot" if k == "bias" else "solid"),
            marker=dict(size=6),
            hovertemplate=f"{label}<br>layer %{{x}}<br>‖Δw‖/‖w‖ %{{y:.3g}}<extra></extra>",
        ))
    layers = sorted(d["layer"].astype(int).unique())
    fig.update_xaxes(title_text="layer", tickvals=layers, ticktext=[_layer_label(v) for v in layers])
    positive = (d["relative_change"].astype(float) > 0).all()
    fig.update_yaxes(title_text="‖Δw‖ / ‖w‖" + (" (log)" if positive else ""), type="log" if positive else "linear")
    return _layout(fig, title, legend_title_text="run / module")


# ---------------------------------------------------------------- 10. runs table

RUNS_TABLE_COLUMNS = ["id", "status", "task", "modules", "layers", "seed", "metric", "trainable %",
                      "progress", "ETA", "worker/device", "age"]


def _utc_now(now) -> pd.Timestamp:
    """`now` as a UTC timestamp (naive values are taken as UTC, like the registry's)."""
    ts = pd.Timestamp(datetime.now().astimezone() if now is None else now)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _progress(step, total) -> str:
    """'120/500 (24%)' (rounded down, so 100% means done), or '' when the run has no step count yet."""
    if total is None or pd.isna(total) or int(total) <= 0:
        return ""
    step = 0 if step is None or pd.isna(step) else int(step)
    return f"{step}/{int(total)} ({100 * step // int(total)}%)"


def runs_table(runs, now=None) -> pd.DataFrame:
    """The Runs tab's table, newest first: short module names, formatted metric, progress, ETA and age."""
    runs = _frame(runs)
    if runs.empty:
        return pd.DataFrame(columns=RUNS_TABLE_COLUMNS)
    r = runs.sort_values("id", ascending=False) if "id" in runs.columns else runs
    n = len(r)
    col = lambda name: r[name].tolist() if name in r.columns else [None] * n  # noqa: E731
    status = _str_col(r, "status", "?").tolist()
    metrics = [f"{name} {float(v):.3f}" if v is not None and not pd.isna(v) else ""
               for name, v in zip(_str_col(r, "primary_metric_name", "score"), col("primary_metric"))]
    eta = [humanize_seconds(e) if s == "running" else "" for s, e in zip(status, col("eta_seconds"))]
    where = [" / ".join(str(x) for x in pair if x is not None and not pd.isna(x) and str(x))
             for pair in zip(col("worker"), col("device"))]
    if "queued_at" in r.columns:
        queued = pd.to_datetime(r["queued_at"], utc=True, errors="coerce")
        ages = [humanize_age(s) for s in (_utc_now(now) - queued).dt.total_seconds()]
    else:
        ages = [""] * n
    return pd.DataFrame({
        "id": col("id"), "status": status, "task": col("task"),
        "modules": [short_name(m) for m in (r["modules"] if "modules" in r.columns else col("family"))],
        "layers": _str_col(r, "layers", "all").tolist(), "seed": col("seed"), "metric": metrics,
        "trainable %": [format_pct(v) for v in col("trainable_pct")],
        "progress": [_progress(s, t) for s, t in zip(col("step"), col("total_steps"))],
        "ETA": eta, "worker/device": where, "age": ages,
    }, columns=RUNS_TABLE_COLUMNS)


# ---------------------------------------------------------------- 11. compare tab


def compare_view(runs, events, task: str, run_ids: Sequence[int] | None = None,
                 layers: str | None = "all", model: str | None = None, max_curves: int = 5) -> dict:
    """Everything the Compare tab shows for one task in one call; run_ids default to the latest succeeded runs."""
    # Without run_ids: the task's `max_curves` most recent succeeded runs, preferring those with events.
    runs, events = _frame(runs), _frame(events)
    if run_ids is None:
        done = finished_runs(runs, task, model)
        ids = sorted(done["id"].tolist()) if "id" in done.columns else []
        logged = set(events["run_id"].unique()) if "run_id" in events.columns else set()
        run_ids = ([i for i in ids if i in logged] or ids)[-max_curves:]
    run_ids = list(run_ids)
    selected = runs[runs["id"].isin(run_ids)] if "id" in runs.columns else runs.iloc[0:0]
    return {
        "score_by_family": score_by_family(runs, task, model),
        "efficiency_frontier": efficiency_frontier(runs, task, model),
        "layer_module_heatmap": layer_module_heatmap(runs, task, model),
        "training_curves": training_curves(events, run_ids, selected),
        "results_table": results_table(runs, layers, model),
        "config_diff": config_diff(selected),
    }
