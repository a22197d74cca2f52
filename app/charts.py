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

from moduletune.app import pooling
from moduletune.app.labels import (
    canonical_modules,
    family_sort_key,  # noqa: F401
    format_pct,
    humanize_age,
    humanize_seconds,
    layer_sort_key,
    short_name,
)
from moduletune.app.labels import cell as _cell
from moduletune.app.labels import id_key as _id_key
from moduletune.app.labels import layer_label as _layer_label
from moduletune.app.labels import task_sort_key as _task_sort_key
from moduletune.app.pooling import finished_runs  # noqa: F401
from moduletune.app.pooling import frame as _frame
from moduletune.app.pooling import module_keys as _module_keys
from moduletune.app.pooling import str_col as _str_col  # noqa: F401
from moduletune.tuning.modules import FAMILY_TABLE

NO_RUNS = "No finished runs yet — submit one in the Experiment tab"
NO_EVENTS = "No training progress yet — submit a run in the Experiment tab"
NO_MAGNITUDES = "No weight-magnitude statistics yet — compute them for a model first"
TEMPLATE = "plotly_white"
HEIGHT = 450
UIREVISION = "moduletune-curves"  # constant so zoom and legend clicks survive live refreshes

FAMILY_COLORS = {f.name: f.color for f in FAMILY_TABLE}
RANDOM_COLOR = "#a3a3a3"  # random:<family> controls: grey, hatched bars, open markers, dotted lines
COMBO_COLORS = ("#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1")
RUN_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
)
QUANTILE_COLUMNS = ("q05", "q25", "q50", "q75", "q95")
LOG_FLOOR = 1e-6  # smallest |w| drawn on a log axis (the magnitudes histogram's first edge)


# ---------------------------------------------------------------- names, order, colours


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


def _layout(fig: go.Figure, title: str, height: int = HEIGHT, **kwargs) -> go.Figure:
    """The shared look: white template, a left-aligned title, a readable height and margins."""
    fig.update_layout(
        template=TEMPLATE, title=dict(text=title, x=0.01), height=height, margin=dict(l=60, r=30, t=70, b=55), **kwargs
    )
    return fig


def empty_figure(title: str, message: str = NO_RUNS, height: int = HEIGHT) -> go.Figure:
    """A blank chart that explains why it is blank, so the UI never shows an error or a bare axis."""
    fig = go.Figure()
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=15, color="#666666")
    )
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


# ---------------------------------------------------------------- references on a score axis


def _mix_note(d: pd.DataFrame) -> str:
    """' · mixes lr, max_train' when the plotted runs differ in more than task, modules and layers."""
    names = pooling.mixed_settings(d)
    return f" · mixes {', '.join(names)}" if names else ""


def _add_references(fig: go.Figure, chance: float, full_mean: float, full_std: float, **where) -> None:
    """The chance level (dotted) and the full fine-tuning mean ± std (dashed line, shaded band)."""
    if not math.isnan(chance):
        fig.add_hline(
            y=chance,
            line_dash="dot",
            line_color="#888888",
            annotation_text=f"chance {chance:.3f}",
            annotation_position="bottom right",
            **where,
        )
    if not math.isnan(full_mean):
        if not math.isnan(full_std) and full_std > 0:
            fig.add_hrect(
                y0=full_mean - full_std,
                y1=full_mean + full_std,
                fillcolor=FAMILY_COLORS["full"],
                opacity=0.08,
                line_width=0,
                **where,
            )
        fig.add_hline(
            y=full_mean,
            line_dash="dash",
            line_color=FAMILY_COLORS["full"],
            annotation_text=f"full fine-tuning {full_mean:.3f}",
            annotation_position="top right",
            **where,
        )


def _score_range(values, chance: float, full_mean: float) -> list[float] | None:
    """A y range that holds the scores, their spread, chance and full FT with a margin, so a 0.01 gap near
    chance is drawn as the small thing it is (never a range narrower than 0.1)."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    v += [x for x in (chance, full_mean) if not math.isnan(x)]
    if not v:
        return None
    lo, hi = min(v), max(v)
    pad = max(0.05, 0.1 * (hi - lo))
    if hi - lo < 0.1:
        mid = (hi + lo) / 2
        lo, hi = mid - 0.05, mid + 0.05
    return [lo - pad, hi + pad]


def _hover_lr(lr) -> str:
    return "" if lr is None or (isinstance(lr, float) and math.isnan(lr)) else f"{lr:g}"


# ---------------------------------------------------------------- 1. scores by family


def score_by_family(runs, task: str, model: str | None = None) -> go.Figure:
    """Mean ± std over seeds of each replicate set (family × layer choice × settings), drawn up from the chance
    level, with the full fine-tuning mean as a reference line; runs that did not learn are marked ✗."""
    d = pooling.finished_runs(runs, task, model)
    title = f"{task}: score by module family" + _mix_note(d)
    if d.empty:
        return empty_figure(title)
    pooled = pooling.pool(d)
    chance, full_mean, full_std, mixed = pooling.task_references(pooled, task)
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
                marker=_bar_marker(group),
                legendgroup=name,
                text=["✗" if f else "" for f in flags],
                textposition="outside",
                customdata=np.column_stack(
                    [std, s["n"].to_numpy(), s["mean"].to_numpy(), [_hover_lr(x) for x in s["lr"]], flags]
                ),
                hovertemplate=(
                    f"<b>{name}</b> @ %{{x}}<br>{metric} %{{customdata[2]:.4f}} ± %{{customdata[0]:.4f}}"
                    "<br>n = %{customdata[1]} · lr %{customdata[3]}<br>%{customdata[4]}<extra></extra>"
                ),
            )
        )
    _add_references(fig, chance, full_mean, full_std)
    fig.update_xaxes(title_text="layers trained", type="category", categoryorder="array", categoryarray=layer_order)
    tops = (pooled["mean"] + pooled["std"].fillna(0)).tolist() + (pooled["mean"] - pooled["std"].fillna(0)).tolist()
    fig.update_yaxes(title_text=metric, range=_score_range(tops, chance, full_mean))
    if mixed:
        title += " (references: the most common settings)"
    return _layout(fig, title, barmode="group", legend_title_text="module")


# ---------------------------------------------------------------- 2. efficiency frontier


def efficiency_frontier(runs, task: str | None = None, model: str | None = None) -> go.Figure:
    """Seed-mean score (± std) vs trainable-parameter share (log x) per replicate set, with the frontier through
    the means, chance and full fine-tuning; one panel per task."""
    d = pooling.finished_runs(runs, task, model)
    title = "Efficiency: score vs trainable parameters" + (f" ({task})" if task else "") + _mix_note(d)
    pooled = pooling.pool(d)
    if not pooled.empty:
        pooled = pooled[pd.to_numeric(pooled["trainable_pct"], errors="coerce") > 0]
    if pooled.empty:
        return empty_figure(title)
    tasks = sorted(pooled["task"].unique(), key=_task_sort_key)
    cols = min(len(tasks), 3)
    rows = math.ceil(len(tasks) / cols)
    if len(tasks) > 1:
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=tasks, horizontal_spacing=0.07, vertical_spacing=0.12)
    else:
        fig = go.Figure()
    hover = (
        "<b>%{customdata[0]}</b> @ %{customdata[1]}<br>%{customdata[2]} %{y:.4f} ± %{customdata[3]:.4f} "
        "(n = %{customdata[4]})<br>trainable %{x:.3g}% · lr %{customdata[5]}<br>%{customdata[6]}<extra></extra>"
    )
    shown = set()
    for i, t in enumerate(tasks):
        where = dict(row=i // cols + 1, col=i % cols + 1) if len(tasks) > 1 else {}
        pt = pooled[pooled["task"] == t]
        front = pooling.seed_means_frontier(pt)
        fig.add_trace(
            go.Scatter(
                x=front["trainable_pct"].to_numpy(),
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
        for group in sorted(pt["group"].unique(), key=family_sort_key):
            g = pt[pt["group"] == group]
            label = short_name(group)
            flags = [pooling.learn_flag(f, k, n) for f, k, n in zip(g["did_not_learn"], g["not_learned"], g["n"])]
            names = [label + (f" ({v})" if v else "") for v in g["variant"]]
            fig.add_trace(
                go.Scatter(
                    x=g["trainable_pct"].to_numpy(),
                    y=g["mean"].to_numpy(),
                    mode="markers",
                    error_y=dict(type="data", array=g["std"].fillna(0.0).to_numpy(), visible=True, thickness=1),
                    name=label,
                    legendgroup=group,
                    showlegend=group not in shown,
                    marker=_scatter_marker(group),
                    customdata=np.column_stack(
                        [
                            names,
                            g["layers"],
                            g["metric"],
                            g["std"].fillna(0.0),
                            g["n"],
                            [_hover_lr(x) for x in g["lr"]],
                            flags,
                        ]
                    ),
                    hovertemplate=hover,
                ),
                **where,
            )
            shown.add(group)
        chance, full_mean, full_std, _ = pooling.task_references(pt, t)
        _add_references(fig, chance, full_mean, full_std, **where)
        spread = pt["std"].fillna(0)
        fig.update_yaxes(
            title_text=pt["metric"].mode().iloc[0],
            **where,
            range=_score_range((pt["mean"] + spread).tolist() + (pt["mean"] - spread).tolist(), chance, full_mean),
        )
    fig.update_xaxes(type="log", title_text="trainable parameters (% of model, log)")
    return _layout(fig, title, height=HEIGHT if rows == 1 else 330 * rows, legend_title_text="module")


# ---------------------------------------------------------------- 3. layer x module heatmap


def layer_module_heatmap(runs, task: str, model: str | None = None) -> go.Figure:
    """Seed-mean score of single-layer runs as a family x layer grid, coloured from chance (dark) to full
    fine-tuning (bright), so noise around chance never looks like a finding."""
    d = pooling.finished_runs(runs, task, model)
    d = d[d["layers"].str.fullmatch(r"\d+")] if not d.empty else d
    title = f"{task}: one layer at a time" + _mix_note(d)
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
    chance, full_mean, _, _ = pooling.task_references(everything, task)
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
    note = pooling.reference_note(chance, full_mean, math.nan, metric)
    return _layout(fig, title + (f" · {note}" if note else ""), height=max(320, 60 + 42 * len(rows)))


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
    evals = dict(
        tuple(events[~is_train & ~events["name"].isin(["loss", "lr", "examples_per_second"])].groupby("run_id"))
    )
    order = list(run_ids) if run_ids is not None else sorted(events["run_id"].unique())
    order = [r for r in dict.fromkeys(order) if r in losses or r in evals]
    if not order:
        return empty_figure(title, NO_EVENTS).update_layout(uirevision=UIREVISION)
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, subplot_titles=("training loss", "evaluation")
    )
    loss_traces, eval_traces, metric_names = [], [], set()
    for i, rid in enumerate(order):
        label, metric = info.get(rid, (f"#{rid}", None))
        line = dict(color=RUN_COLORS[i % len(RUN_COLORS)], width=1.6)
        train = losses.get(rid)
        if train is not None:
            train = train.sort_values("step")
            loss_traces.append(
                go.Scatter(
                    x=train["step"].to_numpy(),
                    y=train["value"].to_numpy(),
                    mode="lines",
                    name=label,
                    legendgroup=str(rid),
                    line=line,
                    hovertemplate=f"{label}<br>step %{{x}}<br>loss %{{y:.4f}}<extra></extra>",
                )
            )
        ev = _eval_metric_rows(evals.get(rid, events.iloc[0:0]), metric).sort_values("step")
        if not ev.empty:
            name = metric or str(ev["name"].iloc[0])
            metric_names.add(name)
            eval_traces.append(
                go.Scatter(
                    x=ev["step"].to_numpy(),
                    y=ev["value"].to_numpy(),
                    mode="lines+markers",
                    name=label,
                    legendgroup=str(rid),
                    showlegend=train is None,
                    line=line,
                    marker=dict(size=6),
                    hovertemplate=f"{label}<br>step %{{x}}<br>{name} %{{y:.4f}}<extra></extra>",
                )
            )
    fig.add_traces(
        loss_traces + eval_traces,
        rows=[1] * len(loss_traces) + [2] * len(eval_traces),
        cols=[1] * (len(loss_traces) + len(eval_traces)),
    )
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


CHANCE_ROW = "chance (majority class; 0 for MCC and r)"
NUMERIC_COLUMNS = [
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
]


def results_table_numeric(runs, layers: str | None = "all", model: str | None = None) -> pd.DataFrame:
    """Long numeric results, one row per replicate set (module, layers, variant, task): mean, std, n, trainable %,
    lr, the chance level and the full fine-tuning mean at the same settings, and whether it learned (CSV export).

    layers filters one layer choice (families that ignore layers always count); None keeps every choice."""
    d = pooling.finished_runs(runs, None, model)
    if not d.empty and layers is not None:
        d = d[(d["layers"] == str(layers)) | d["group"].map(_global_family)]
    pooled = pooling.with_references(pooling.pool(d))
    if pooled.empty:
        return pd.DataFrame(columns=NUMERIC_COLUMNS)
    out = pooled.rename(columns={"group": "family"}).assign(module=lambda p: p["family"].map(short_name))
    keys = [
        (family_sort_key(f), layer_sort_key(la), v, _task_sort_key(t))
        for f, la, v, t in zip(out["family"], out["layers"], out["variant"], out["task"])
    ]
    out = out.iloc[sorted(range(len(keys)), key=keys.__getitem__)]
    return out[NUMERIC_COLUMNS].reset_index(drop=True)


def _result_cell(mean: float, std: float, n: int, did_not_learn: bool = False) -> str:
    """'0.812 ± 0.004 (3)'; a single seed has no spread, so just '0.812 (1)'; ' ✗' when it did not learn."""
    flag = " ✗" if did_not_learn else ""
    if n <= 1 or pd.isna(std):
        return f"{mean:.3f} ({n}){flag}"
    return f"{mean:.3f} ± {std:.3f} ({n}){flag}"


def results_table(runs, layers: str | None = "all", model: str | None = None) -> pd.DataFrame:
    """The paper-style table: one row per module (and layer choice when several, and settings variant) in paper
    order, 'trainable %', 'lr', then 'mean ± std (n)' per task (✗: did not learn), closed by a chance row."""
    long = results_table_numeric(runs, layers, model)
    if long.empty:
        return pd.DataFrame(columns=["module", "trainable %", "lr"])
    tasks = sorted(long["task"].unique(), key=_task_sort_key)
    key_cols = ["family", "layers", "variant"]
    several_layers = long.loc[~long["family"].map(_global_family), "layers"].nunique() > 1
    rows_of = list(dict.fromkeys(zip(*(long[c] for c in key_cols))))  # already in paper order
    cells = {
        (f, la, v, t): _result_cell(m, s, n, bool(x))
        for f, la, v, t, m, s, n, x in long[[*key_cols, "task", "mean", "std", "n", "did_not_learn"]].itertuples(
            index=False, name=None
        )
    }
    first = long.drop_duplicates(key_cols).set_index(key_cols)
    rows = []
    for f, la, v in rows_of:
        mine = long[(long["family"] == f) & (long["layers"] == la) & (long["variant"] == v)]
        lrs = sorted({f"{x:g}" for x in mine["lr"] if pd.notna(x)})
        where = f" @{la}" if several_layers and not _global_family(f) else ""
        rows.append(
            [
                short_name(f) + where + (f" ({v})" if v else ""),
                format_pct(first.loc[(f, la, v), "trainable_pct"]),
                ", ".join(lrs),
            ]
            + [cells.get((f, la, v, t), "") for t in tasks]
        )
    # Full fine-tuning is the last module row (paper order); chance closes the table.
    chance = long.groupby("task")["chance"].mean()
    rows.append([CHANCE_ROW, "", ""] + ["" if pd.isna(chance.get(t)) else f"{chance[t]:.3f}" for t in tasks])
    return pd.DataFrame(rows, columns=["module", "trainable %", "lr"] + tasks)


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
    w = (
        pd.to_numeric(m["count"], errors="coerce").fillna(1.0)
        if "count" in m.columns
        else pd.Series(1.0, index=m.index)
    )
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
            name=short_name(group),
            x=x,
            q1=f("q25"),
            median=f("q50"),
            q3=f("q75"),
            lowerfence=f("q05"),
            upperfence=f("q95"),
            mean=f("mean_abs") if "mean_abs" in q.columns else None,
            marker_color=family_color(group),
            line_color=family_color(group),
            fillcolor=family_color(group),
            opacity=0.75,
            **kw,
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
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[_layer_label(v) for v in layers],
            y=[short_name(f) for f in families],
            text=text,
            texttemplate="%{text}",
            colorscale="Magma",
            hoverongaps=False,
            colorbar=dict(title=dict(text=f"mean |{kind}|"), tickvals=ticks, ticktext=[f"1e{t}" for t in ticks]),
            hovertemplate="%{y} @ layer %{x}<br>mean |" + kind + "| %{text}<extra></extra>",
        )
    )
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
    keys = sorted(
        d[["run_id", "family", "kind"]].drop_duplicates().itertuples(index=False, name=None),
        key=lambda t: (_id_key(t[0]), family_sort_key(t[1]), str(t[2])),
    )
    for run_id, family, k in keys:
        g = d[(d["run_id"] == run_id) & (d["family"] == family) & (d["kind"] == k)].sort_values("layer")
        label = f"#{run_id} {short_name(family)}" + (f" ({k})" if several_kinds else "")
        fig.add_trace(
            go.Scatter(
                x=g["layer"].astype(int).to_numpy(),
                y=g["relative_change"].astype(float).to_numpy(),
                mode="lines+markers",
                name=label,
                legendgroup=f"{run_id}",
                line=dict(color=family_color(family), dash="dot" if k == "bias" else "solid"),
                marker=dict(size=6),
                hovertemplate=f"{label}<br>layer %{{x}}<br>‖Δw‖/‖w‖ %{{y:.3g}}<extra></extra>",
            )
        )
    layers = sorted(d["layer"].astype(int).unique())
    fig.update_xaxes(title_text="layer", tickvals=layers, ticktext=[_layer_label(v) for v in layers])
    positive = (d["relative_change"].astype(float) > 0).all()
    fig.update_yaxes(title_text="‖Δw‖ / ‖w‖" + (" (log)" if positive else ""), type="log" if positive else "linear")
    return _layout(fig, title, legend_title_text="run / module")


# ---------------------------------------------------------------- 9b. lr searches

NO_SEARCHES = "No lr searches yet — tick 'search the learning rate first' in the Experiment tab"


def lr_search_curves(points, title: str = "Learning-rate searches: held-out score vs lr") -> go.Figure:
    """Score vs lr (log) of each search at each rung of its successive halving (earlier rungs dotted), the chosen
    lr starred: whether the grid was wide enough and how sharp the optimum is. `points` has search_id, label,
    lr, score, step, metric and chosen_lr (NaN while the search runs)."""
    d = _frame(points)
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
    return _layout(fig, title, legend_title_text="search")


# ---------------------------------------------------------------- 10. runs table

RUNS_TABLE_COLUMNS = [
    "id",
    "status",
    "task",
    "modules",
    "layers",
    "seed",
    "lr",
    "metric",
    "trainable %",
    "progress",
    "ETA",
    "worker/device",
    "age",
]


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


def _run_lr(lr, kind: str, status: str) -> str:
    """The lr a run trains at; a search shows 'searching' until it chose, then 'chose 3e-3'."""
    if kind == "search":
        return f"chose {float(lr):g}" if status == "succeeded" and lr is not None and not pd.isna(lr) else "searching"
    return "" if lr is None or pd.isna(lr) else f"{float(lr):g}"


def runs_table(runs, now=None) -> pd.DataFrame:
    """The Runs tab's table, newest first: short module names, formatted metric, progress, ETA and age."""
    runs = _frame(runs)
    if runs.empty:
        return pd.DataFrame(columns=RUNS_TABLE_COLUMNS)
    r = runs.sort_values("id", ascending=False) if "id" in runs.columns else runs
    n = len(r)
    col = lambda name: r[name].tolist() if name in r.columns else [None] * n  # noqa: E731
    status = _str_col(r, "status", "?").tolist()
    kinds = _str_col(r, "kind", "run").tolist()
    at_chance = [x is not None and not pd.isna(x) and not bool(x) for x in col("learned")]
    # A score beside its verdict: a run at chance reads as a failed run, a search's score as a held-out one.
    metrics = [
        ("" if k == "run" else "held-out ") + f"{name} {float(v):.3f}" + (" ✗ at chance" if low else "")
        if v is not None and not pd.isna(v)
        else ""
        for name, v, k, low in zip(_str_col(r, "primary_metric_name", "score"), col("primary_metric"), kinds, at_chance)
    ]
    lrs = [_run_lr(x, k, s) for x, k, s in zip(col("lr"), kinds, status)]
    eta = [humanize_seconds(e) if s == "running" else "" for s, e in zip(status, col("eta_seconds"))]
    where = [
        " / ".join(str(x) for x in pair if x is not None and not pd.isna(x) and str(x))
        for pair in zip(col("worker"), col("device"))
    ]
    if "queued_at" in r.columns:
        queued = pd.to_datetime(r["queued_at"], utc=True, errors="coerce")
        ages = [humanize_age(s) for s in (_utc_now(now) - queued).dt.total_seconds()]
    else:
        ages = [""] * n
    return pd.DataFrame(
        {
            "id": col("id"),
            "status": status,
            "task": col("task"),
            "modules": [
                short_name(m)
                + ("" if k == "run" else f" · {k}")
                + (f" (of #{int(p)})" if p is not None and not pd.isna(p) else "")
                for m, k, p in zip(r["modules"] if "modules" in r.columns else col("family"), kinds, col("parent_id"))
            ],
            "layers": _str_col(r, "layers", "all").tolist(),
            "seed": col("seed"),
            "lr": lrs,
            "metric": metrics,
            "trainable %": [format_pct(v) for v in col("trainable_pct")],
            "progress": [_progress(s, t) for s, t in zip(col("step"), col("total_steps"))],
            "ETA": eta,
            "worker/device": where,
            "age": ages,
        },
        columns=RUNS_TABLE_COLUMNS,
    )


# ---------------------------------------------------------------- 11. compare tab


def compare_view(
    runs,
    events,
    task: str,
    run_ids: Sequence[int] | None = None,
    layers: str | None = "all",
    model: str | None = None,
    max_curves: int = 5,
) -> dict:
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
