"""The Weights tab's figures: weight magnitudes of a pre-trained model and how far tuning moved each module.

Pure functions of tuning.magnitudes' rows (as app.weights.models returns them), like app.figures.charts.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from moduletune.app.figures.labels import family_sort_key, id_key, layer_label, short_name
from moduletune.app.figures.pooling import frame
from moduletune.app.figures.style import LOG_FLOOR, decade_axis, empty_figure, family_color, layout, run_color
from moduletune.tuning.modules import FAMILY

NO_MAGNITUDES = "No weight-magnitude statistics yet — compute them for a model first"
DELTAS_TITLE = "How far tuning moved each module"
NO_DELTAS = "Pick succeeded runs above and press Show deltas"
QUANTILE_COLUMNS = ("q05", "q25", "q50", "q75", "q95")
PLURALS = {"bias": "biases"}  # tensor kinds whose plural is not kind + 's'
FACET_COLUMNS = 3  # module-family panels per row of the deltas figure


def plural(kind: str) -> str:
    """'weight' -> 'weights', 'bias' -> 'biases': the figures' titles name tensor kinds in the plural."""
    return PLURALS.get(kind, f"{kind}s")


# ---------------------------------------------------------------- magnitudes


def _magnitude_rows(mags, kind: str) -> pd.DataFrame:
    """Magnitude rows of one kind ('weight' or 'bias') with the columns the charts need."""
    mags = frame(mags)
    need = {"family", "layer", "kind", "count", "mean_abs"}
    if mags.empty or not need <= set(mags.columns):
        return pd.DataFrame(columns=sorted(need))
    return mags[mags["kind"] == kind]


def _pooled_quantiles(m: pd.DataFrame) -> pd.DataFrame:
    """Per family: count-weighted mean of each layer's |w| quantiles and mean (a pooled summary over layers)."""
    cols = [c for c in (*QUANTILE_COLUMNS, "mean_abs") if c in m.columns]
    w = pd.to_numeric(m["count"], errors="coerce").fillna(1.0)
    weighted = m[cols].astype(float).mul(w, axis=0).groupby(m["family"]).sum()
    return weighted.div(w.groupby(m["family"]).sum(), axis=0)


def magnitude_distributions(mags, kind: str = "weight", by_layer: bool = False) -> go.Figure:
    """Boxes of |w| per family (whiskers 5%/95%, box 25/50/75%) on a log axis: LayerNorm's scale stands out."""
    title = f"|{'w' if kind == 'weight' else 'b'}| by module family ({plural(kind)})"
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
            fig.add_trace(box(group, [layer_label(v) for v in q["layer"]], q))
        layer_order = [layer_label(v) for v in sorted(m["layer"].astype(int).unique())]
        fig.update_xaxes(title_text="layer", type="category", categoryorder="array", categoryarray=layer_order)
        fig.update_layout(boxmode="group")
    else:
        pooled = _pooled_quantiles(m)
        for group in families:
            fig.add_trace(box(group, [short_name(group)], pooled.loc[[group]]))
        fig.update_xaxes(title_text="module family", type="category")
    shown = m[[c for c in (*QUANTILE_COLUMNS, "mean_abs") if c in m.columns]].to_numpy(dtype=float).ravel()
    fig.update_yaxes(**decade_axis(np.maximum(shown, LOG_FLOOR)), title_text=f"|{kind}| (log scale)")
    return layout(fig, title, legend_title_text="module")


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
            x=[layer_label(v) for v in layers],
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
    return layout(fig, title, height=max(320, 60 + 42 * len(families)))


# ---------------------------------------------------------------- deltas


def _facet_title(family: str) -> str:
    """A deltas panel's title: the family's checkbox label ('LN · LayerNorms'), or its short name if that is long."""
    label = FAMILY[family].label if family in FAMILY else short_name(family)
    return label if len(label) <= 30 else short_name(family)


def delta_by_layer(deltas, kind: str | None = None) -> go.Figure:
    """Relative change ||Δw||/||w|| by layer, one panel per module family and one colour per run (its one legend
    entry), bias tensors open and dotted: runs that trained the same family stay apart, side by side at each layer."""
    d = frame(deltas)
    need = {"run_id", "family", "layer", "kind", "relative_change"}
    if d.empty or not need <= set(d.columns):
        return empty_figure(DELTAS_TITLE)
    if kind is not None:
        d = d[d["kind"] == kind]
    if d.empty:
        return empty_figure(DELTAS_TITLE)
    runs = sorted(d["run_id"].unique(), key=id_key)
    names = d.groupby("run_id")["run_label"].first() if "run_label" in d.columns else {}
    name = {rid: str(names.get(rid, f"#{rid}")) for rid in runs}
    families = sorted(d["family"].unique(), key=family_sort_key)
    kinds = sorted(d["kind"].unique(), key=lambda k: (k != "weight", k))
    cols = min(len(families), FACET_COLUMNS)
    rows = math.ceil(len(families) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[_facet_title(f) for f in families],
        shared_yaxes="all",
        horizontal_spacing=0.05,
        vertical_spacing=0.25 / rows,  # room for a panel's tick labels and the next one's title
    )
    in_legend = set()
    for i, family in enumerate(families):
        where = dict(row=i // cols + 1, col=i % cols + 1)
        f = d[d["family"] == family]
        layers = sorted(f["layer"].astype(int).unique())
        for n, rid in enumerate(runs):
            for k in kinds:
                g = f[(f["run_id"] == rid) & (f["kind"] == k)].sort_values("layer")
                if g.empty:
                    continue
                what = f"{short_name(family)}" + (f" {plural(k)}" if len(kinds) > 1 else "")
                fig.add_trace(
                    go.Scatter(
                        x=[layer_label(v) for v in g["layer"].astype(int)],
                        y=g["relative_change"].astype(float).to_numpy(),
                        mode="lines+markers",
                        name=name[rid],
                        legendgroup=str(rid),
                        showlegend=rid not in in_legend,
                        legendrank=n,
                        offsetgroup=str(rid),
                        line=dict(color=run_color(n), dash="dot" if k == "bias" else "solid"),
                        marker=dict(size=7, color=run_color(n), symbol="circle-open" if k == "bias" else "circle"),
                        hovertemplate=f"{name[rid]}<br>{what} · layer %{{x}}<br>‖Δw‖/‖w‖ %{{y:.3g}}<extra></extra>",
                    ),
                    **where,
                )
                in_legend.add(rid)
        order = [layer_label(v) for v in layers]
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=order, **where)
    fig.update_xaxes(title_text="layer", row=rows)
    values = d["relative_change"].astype(float)
    axis = decade_axis(values) if (values > 0).all() else dict(type="linear")
    fig.update_yaxes(**axis)
    fig.update_yaxes(title_text="‖Δw‖ / ‖w‖" + (" (log)" if axis["type"] == "log" else ""), col=1)
    note = " · weights: filled, solid · biases: open, dotted" if len(kinds) > 1 else ""
    return layout(fig, DELTAS_TITLE + note, height=120 + 300 * rows, legend_title_text="run", scattermode="group")
