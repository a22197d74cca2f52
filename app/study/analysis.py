"""The study's per-task analysis: the layer-wise and efficiency figures and the |w| vs score rank correlation.

Pure functions of DataFrames (the registry's runs frame, tuning.magnitudes rows without 'hist'), drawn with
app.figures.style like app.figures.charts; app.study.report assembles them into the report and its exports.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from moduletune.app.figures import charts, pooling
from moduletune.app.figures.labels import family_sort_key, short_name
from moduletune.app.figures.style import (
    LOG_FLOOR,
    add_references,
    empty_figure,
    family_color,
    hover_lr,
    is_random,
    layout,
    mix_note,
    scatter_marker,
    score_range,
)
from moduletune.tuning.modules import parse_layers

NO_SINGLE_LAYER = (
    "No finished single-layer runs yet — submit some (layers = one number, or a sweep over each "
    "layer) in the Experiment tab"
)
NO_MAGNITUDES = "No weight-magnitude statistics for this task's model"
NO_PAIRS = "No module family has both finished runs and weight-magnitude statistics"
SINGLE_LAYER = r"\d+"
EXACT_MAX = 8  # families up to which the p-value is exact (8! pairings)


def _row_name(group: str, variant: str) -> str:
    """'LN' or 'LN (max_train=2000)': a pooled row's label, as the charts and the table write it."""
    return short_name(group) + (f" ({variant})" if variant else "")


# ---------------------------------------------------------------- figures


def layerwise_figure(runs, task: str, model: str | None = None) -> go.Figure:
    """Seed-mean score (± std) against the one layer trained, a line per family in its colour, read against
    the chance level and full fine-tuning: where in the network each module transfers best."""
    d = pooling.finished_runs(runs, task, model)
    single = d[d["layers"].str.fullmatch(SINGLE_LAYER)] if not d.empty else d
    title = f"{task}: score by the one layer trained" + mix_note(single)
    if single.empty:
        return empty_figure(title, NO_SINGLE_LAYER)
    pooled = pooling.pool(single)
    chance, full_mean, full_std, mixed, full_failed = pooling.task_references(pooling.pool(d), task)
    metric = pooled["metric"].mode().iloc[0]
    fig = go.Figure()
    for (group, variant), s in pooled.groupby(["group", "variant"], sort=False):
        s = s.assign(_layer=s["layers"].astype(int)).sort_values("_layer")
        name = _row_name(group, variant)
        std = s["std"].fillna(0.0).to_numpy()
        flags = [pooling.learn_flag(f, k, n) for f, k, n in zip(s["did_not_learn"], s["not_learned"], s["n"])]
        fig.add_trace(
            go.Scatter(
                x=s["_layer"].to_numpy(),
                y=s["mean"].to_numpy(),
                mode="lines+markers",
                name=name,
                error_y=dict(type="data", array=std, visible=True, thickness=1.2),
                line=dict(color=family_color(group), dash="dot" if is_random(group) else "solid"),
                marker=scatter_marker(group),
                customdata=np.column_stack([std, s["n"].to_numpy(), [hover_lr(x) for x in s["lr"]], flags]),
                hovertemplate=(
                    f"<b>{name}</b> @ layer %{{x}}<br>{metric} %{{y:.4f}} ± %{{customdata[0]:.4f}}"
                    "<br>n = %{customdata[1]} · lr %{customdata[2]}<br>%{customdata[3]}<extra></extra>"
                ),
            )
        )
    add_references(fig, chance, full_mean, full_std, full_failed)
    layers = sorted(int(x) for x in pooled["layers"].unique())
    fig.update_xaxes(title_text="layer trained (all others frozen)", tickmode="array", tickvals=layers)
    spread = pooled["std"].fillna(0)
    fig.update_yaxes(
        title_text=metric,
        range=score_range((pooled["mean"] + spread).tolist() + (pooled["mean"] - spread).tolist(), chance, full_mean),
    )
    if mixed:
        title += " (references: the most common settings)"
    return layout(fig, title, legend_title_text="module")


def efficiency_figure(runs, task: str | None = None, model: str | None = None) -> go.Figure:
    """Seed-mean score vs trainable share (log x) with the frontier through the means: the per-parameter view."""
    return charts.efficiency_frontier(runs, task, model)


# ---------------------------------------------------------------- magnitudes vs score


def _weights(magnitudes) -> pd.DataFrame:
    """The magnitude rows of weight tensors (biases sit on another scale), or an empty frame."""
    m = pooling.frame(magnitudes)
    if m.empty or not {"family", "layer", "mean_abs"} <= set(m.columns):
        return pd.DataFrame(columns=["family", "layer", "kind", "count", "mean_abs"])
    return m[m["kind"] == "weight"] if "kind" in m.columns else m


def family_mean_abs(magnitudes, family: str, layers: str = "all") -> float:
    """Count-weighted mean |w| of a family's weights over the layers a run trained (embeddings: all theirs)."""
    m = _weights(magnitudes)
    m = m[m["family"] == family]
    if m.empty:
        return math.nan
    if family != "embeddings" and str(layers) != "all":
        try:
            keep = parse_layers(layers, int(pd.to_numeric(_weights(magnitudes)["layer"]).max()) + 1)
        except ValueError:
            return math.nan
        m = m[m["layer"].astype(int).isin(keep)]
    count = (
        pd.to_numeric(m["count"], errors="coerce").fillna(1.0)
        if "count" in m.columns
        else pd.Series(1.0, index=m.index)
    )
    total = float(count.sum())
    return float((m["mean_abs"].astype(float) * count).sum() / total) if total > 0 else math.nan


def magnitude_points(runs, magnitudes, task: str, layers: str = "all", model: str | None = None) -> pd.DataFrame:
    """Per module family with magnitudes: its mean |w| over the layers trained and its seed-mean score on the
    task (at the most common comparison settings; the best lr's replicate set when several were tried)."""
    columns = ["family", "module", "mean_abs", "mean", "std", "n", "lr", "did_not_learn"]
    pooled = pooling.pool(pooling.finished_runs(runs, task, model))
    families = set(_weights(magnitudes)["family"])
    if pooled.empty or not families:
        return pd.DataFrame(columns=columns)
    # Embeddings ignore the layer choice, so their runs count under any.
    p = pooled[pooled["group"].isin(families) & ((pooled["layers"] == str(layers)) | (pooled["group"] == "embeddings"))]
    if p.empty:
        return pd.DataFrame(columns=columns)
    p = p[p["comparison_key"] == p["comparison_key"].value_counts().index[0]]
    p = p.sort_values("mean", ascending=False, kind="stable").drop_duplicates("group")
    out = p.rename(columns={"group": "family"}).assign(
        module=lambda d: d["family"].map(short_name),
        mean_abs=lambda d: [family_mean_abs(magnitudes, f, lay) for f, lay in zip(d["family"], d["layers"])],
    )
    out = out[out["mean_abs"].notna()]
    order = sorted(range(len(out)), key=lambda i: family_sort_key(out["family"].iloc[i]))
    return out.iloc[order][columns].reset_index(drop=True)


def _exact_p(x, y) -> float:
    """Two-sided p of Spearman's rho by enumerating every pairing: exact where the t approximation is not."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    perms = np.array(list(itertools.permutations(ry)))
    rhos = perms @ rx / math.sqrt(float(rx @ rx) * float(ry @ ry))
    observed = float(ry @ rx) / math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(np.mean(np.abs(rhos) >= abs(observed) - 1e-12))


def spearman(x, y) -> dict:
    """Spearman's rho and p across families (scipy; the exact permutation p for up to EXACT_MAX families, where
    scipy's t approximation says p = 0 for 3 points in order); NaN for fewer than 3 or constant values."""
    n = len(x)
    if n < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return {"rho": math.nan, "p": math.nan, "n_families": n, "p_method": ""}
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho, p = spearmanr(list(x), list(y))
    if n <= EXACT_MAX:
        return {"rho": float(rho), "p": _exact_p(x, y), "n_families": n, "p_method": "exact permutation"}
    return {"rho": float(rho), "p": float(p), "n_families": n, "p_method": "t approximation"}


def rho_text(stats: dict) -> str:
    """'Spearman ρ = 0.93 (p = 0.003, 7 families)', or why it is undefined."""
    n = int(stats.get("n_families", 0))
    if n < 3:
        return f"Spearman ρ undefined: {n} famil{'y' if n == 1 else 'ies'} (needs at least 3)"
    if math.isnan(stats.get("rho", math.nan)):
        return f"Spearman ρ undefined: constant |w| or scores across {n} families"
    p = stats["p"]
    return f"Spearman ρ = {stats['rho']:.2f} (p {'< 0.001' if p < 1e-3 else f'= {p:.3g}'}, {n} families)"


def magnitude_vs_score(
    runs, magnitudes, task: str, layers: str = "all", model: str | None = None
) -> tuple[go.Figure, dict]:
    """Each family's mean |w| (log x) against its seed-mean score on the task, with Spearman's rho across
    families in the title: the paper's link between LayerNorm's large weights and its transfer."""
    points = magnitude_points(runs, magnitudes, task, layers, model)
    stats = spearman(points["mean_abs"].tolist(), points["mean"].tolist())
    title = f"{task}: weight magnitude vs score (layers {layers}) · {rho_text(stats)}"
    if points.empty:
        return empty_figure(title, NO_PAIRS if not _weights(magnitudes).empty else NO_MAGNITUDES), stats
    fig = go.Figure()
    for row in points.itertuples(index=False):
        std = 0.0 if pd.isna(row.std) else float(row.std)
        fig.add_trace(
            go.Scatter(
                x=[max(float(row.mean_abs), LOG_FLOOR)],
                y=[row.mean],
                mode="markers+text",
                name=row.module,
                text=[row.module + (" ✗" if row.did_not_learn else "")],
                textposition="top center",
                error_y=dict(type="data", array=[std], visible=True, thickness=1.2),
                marker=scatter_marker(row.family),
                hovertemplate=(
                    f"<b>{row.module}</b><br>mean |w| %{{x:.3g}}<br>score %{{y:.4f}} ± {std:.4f} "
                    f"(n = {row.n})<extra></extra>"
                ),
            )
        )
    pooled = pooling.pool(pooling.finished_runs(runs, task, model))
    chance, full_mean, full_std, _, full_failed = pooling.task_references(pooled, task)
    add_references(fig, chance, full_mean, full_std, full_failed)
    fig.update_xaxes(type="log", title_text="mean |w| of the weights trained (log)")
    spread = points["std"].fillna(0)
    fig.update_yaxes(
        title_text=pooling.metric_name(pooling.finished_runs(runs, task, model)),
        range=score_range((points["mean"] + spread).tolist() + (points["mean"] - spread).tolist(), chance, full_mean),
    )
    return layout(fig, title, showlegend=False), stats
