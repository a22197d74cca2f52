"""The Runs and Compare tabs' training-curves figure: loss, evaluation metric, lr and throughput against step.

One colour per run across four stacked panels sharing the step axis: the training loss smoothed (an EMA, as
TensorBoard draws it) over its faint raw points, the primary eval metric on an axis fitted to its values, the
lr schedule and examples per second. Every axis keeps its title, and a panel without data says so, so a run
cancelled before its first evaluation still reads at a glance. A constant uirevision keeps zoom and legend
clicks across live refreshes. Pure: registry DataFrames in, a Plotly figure out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from moduletune.app.figures.labels import short_name
from moduletune.app.figures.pooling import frame, module_keys, str_col
from moduletune.app.figures.style import RUN_COLORS, empty_figure, layout
from moduletune.tuning.glue import TASKS

NO_EVENTS = "No training progress yet — submit a run in the Experiment tab"
UIREVISION = "moduletune-curves"  # constant so zoom and legend clicks survive live refreshes
SMOOTHING = 0.6  # the default EMA weight of the loss line (TensorBoard's default too)
MAX_SMOOTHING = 0.99
TRAIN_NAMES = ("loss", "lr", "examples_per_second")  # the per-step "train" events tasks.jobs records
# Panels below the loss: (row, event name, y-axis title, hover format, what an empty panel says).
PANELS = (
    (3, "lr", "lr", ".3g", "no lr recorded"),
    (4, "examples_per_second", "examples/s", ".1f", "no throughput recorded (runs before it was logged)"),
)
# The natural range of each GLUE metric (MNLI's accuracy_matched is an accuracy).
METRIC_BOUNDS = {
    "accuracy": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "matthews_correlation": (-1.0, 1.0),
    "pearson": (-1.0, 1.0),
    "spearman": (-1.0, 1.0),
}


def check_smoothing(smoothing) -> float:
    """The EMA weight as a float in [0, MAX_SMOOTHING] (None: the default); anything else is a ValueError."""
    if smoothing is None:
        return SMOOTHING
    try:
        weight = float(smoothing)
    except (TypeError, ValueError):
        weight = math.nan
    if not 0.0 <= weight <= MAX_SMOOTHING:  # NaN fails this too
        raise ValueError(f"smoothing must be a number from 0 to {MAX_SMOOTHING}, got {smoothing!r}")
    return weight


def smooth(values, weight: float):
    """The debiased exponential moving average TensorBoard draws (weight 0: the values themselves)."""
    # adjust=True divides by the weights' sum, so the first points are not dragged towards zero.
    return pd.Series(values, dtype="float64").ewm(alpha=1.0 - weight, adjust=True).mean().to_numpy()


def metric_bounds(names) -> tuple[float, float]:
    """The widest natural range of these metric names ((-inf, inf) when one of them is unknown)."""
    lo, hi = math.inf, -math.inf
    for name in names:
        key = next((k for k in METRIC_BOUNDS if name == k or str(name).startswith(k + "_")), None)
        if key is None:
            return -math.inf, math.inf
        lo, hi = min(lo, METRIC_BOUNDS[key][0]), max(hi, METRIC_BOUNDS[key][1])
    return (lo, hi) if lo <= hi else (-math.inf, math.inf)


def eval_range(values, names) -> list[float] | None:
    """A y range fitted to the eval values with a little padding, never narrower than a tenth of the metric's
    natural span (or of the value), and kept inside that span (an accuracy axis never leaves [0, 1])."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return None
    b0, b1 = metric_bounds(names)
    lo, hi = min(v), max(v)
    scale = b1 - b0 if math.isfinite(b1 - b0) else max(abs(lo), abs(hi)) or 1.0
    if hi - lo < 0.1 * scale:  # one point, or a flat line: a window around it, not a zero-height axis
        mid = (lo + hi) / 2
        lo, hi = mid - 0.05 * scale, mid + 0.05 * scale
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if lo < b0:  # slide the window back inside the bounds rather than shrinking it
        lo, hi = b0, min(b1, hi + (b0 - lo))
    if hi > b1:
        lo, hi = max(b0, lo - (hi - b1)), b1
    return [lo, hi]


def eval_metric_rows(ev: pd.DataFrame, metric: str | None) -> pd.DataFrame:
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


def run_info(runs) -> dict:
    """run id -> (legend label '#id FAMILY@layers', primary metric name or None) from a runs frame."""
    runs = frame(runs)
    if runs.empty or "id" not in runs.columns:
        return {}
    names = str_col(runs, "primary_metric_name", "")
    if "task" in runs.columns:  # a run still training has no metric name yet: its task's primary metric
        names = [n or getattr(TASKS.get(str(t)), "primary_metric", "") for n, t in zip(names, runs["task"])]
    labels = [
        f"#{r} {short_name(k)}@{lay}"
        for r, k, lay in zip(runs["id"], module_keys(runs), str_col(runs, "layers", "all"))
    ]
    return {rid: (label, name or None) for rid, label, name in zip(runs["id"], labels, names)}


def _series(d: pd.DataFrame | None) -> tuple:
    """A run's (steps, values) in step order, NaN reads left out (a GPU run's before its first loss read)."""
    if d is None:
        return (), ()
    d = d[d["value"].notna()].sort_values("step", kind="stable")
    return d["step"].to_numpy(), d["value"].to_numpy()


def _mode(n: int, lines: str = "lines") -> str:
    return lines if n > 1 else "markers"  # a single point has no line to draw


def training_curves(events, run_ids: Sequence[int] | None = None, runs=None, smoothing=SMOOTHING) -> go.Figure:
    """Training loss (EMA `smoothing` over the raw points), eval primary metric, lr and examples/s vs step for
    the chosen runs; `smoothing` is the EMA weight in [0, 0.99] (0: the raw loss line alone)."""
    weight = check_smoothing(smoothing)
    title = "Training curves"
    events = frame(events)
    if events.empty or not {"run_id", "step", "split", "name", "value"} <= set(events.columns):
        return empty_figure(title, NO_EVENTS).update_layout(uirevision=UIREVISION)
    if run_ids is not None:
        events = events[events["run_id"].isin(list(run_ids))]
    info = run_info(runs)
    is_train = events["split"] == "train"
    train = {n: dict(tuple(events[is_train & (events["name"] == n)].groupby("run_id"))) for n in TRAIN_NAMES}
    evals = dict(tuple(events[~is_train & ~events["name"].isin(TRAIN_NAMES)].groupby("run_id")))
    order = list(run_ids) if run_ids is not None else sorted(events["run_id"].unique())
    order = [r for r in dict.fromkeys(order) if r in evals or any(r in t for t in train.values())]
    if not order:
        return empty_figure(title, NO_EVENTS).update_layout(uirevision=UIREVISION)
    traces = Traces()
    for i, rid in enumerate(order):
        label, metric = info.get(rid, (f"#{rid}", None))
        color = RUN_COLORS[i % len(RUN_COLORS)]
        add_loss(traces, rid, label, color, train["loss"].get(rid), weight)
        add_eval(traces, rid, label, color, evals.get(rid, events.iloc[0:0]), metric)
        for row, name, axis, fmt, _ in PANELS:
            steps, values = _series(train[name].get(rid))
            if len(steps):
                traces.add(row, rid, label, name, steps, values, color, f"{axis} %{{y:{fmt}}}")
    fig = curves_figure(weight)
    notes = traces.place(fig, first=dict(name=info.get(order[0], (f"#{order[0]}",))[0], legendgroup=str(order[0])))
    label_axes(fig, traces)
    for row, note in notes.items():
        grey = dict(showarrow=False, font=dict(size=12, color="#888888"))
        fig.add_annotation(text=note, x=0.5, y=0.5, xref="x domain", yref="y domain", row=row, col=1, **grey)
    return layout(fig, title, height=820, uirevision=UIREVISION, legend_title_text="run")


def curves_figure(weight: float) -> go.Figure:
    """The four stacked panels, sharing the step axis: loss, evaluation, learning rate, throughput."""
    return make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.34, 0.3, 0.18, 0.18],
        subplot_titles=(
            f"training loss (smoothing {weight:g})" if weight else "training loss",
            "evaluation",
            "learning rate",
            "throughput (the run's mean so far)",
        ),
    )


@dataclass
class Traces:
    """The curves' traces as they are added, each with its panel's row; raw loss apart, to go under the rest."""

    traces: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    below: list = field(default_factory=list)
    below_rows: list = field(default_factory=list)
    shown: set = field(default_factory=set)  # runs with a legend entry
    metric_names: set = field(default_factory=set)
    eval_values: list = field(default_factory=list)

    def add(self, row: int, rid, label: str, series: str, x, y, color: str, hover: str, size: int = 5, **kw):
        """One run's line in one panel."""
        # One legend entry per run, on its first solid trace; the legend group toggles the run in every panel.
        # Raw loss goes first, under every run's lines, and never into the legend (its entry would be faint).
        raw = series == "loss raw"
        kw.setdefault("mode", _mode(len(x)))
        kw.setdefault("line", dict(color=color, width=1.8))
        (self.below if raw else self.traces).append(
            go.Scatter(
                x=x,
                y=y,
                name=label,
                legendgroup=str(rid),
                showlegend=not raw and rid not in self.shown,
                meta=series,
                marker=dict(color=color, size=size),
                hovertemplate=f"{label}<br>step %{{x}}<br>{hover}<extra></extra>",
                **kw,
            )
        )
        (self.below_rows if raw else self.rows).append(row)
        self.shown.update(() if raw else (rid,))

    def place(self, fig: go.Figure, first: dict) -> dict:
        """Every trace into its panel; a panel without data gets an empty trace (the first run's: plotly.js draws
        no axes for a panel with none). Returns the empty panels' notes by row."""
        notes = {
            r: note for r, note in [(2, "no evaluation yet")] + [(p[0], p[4]) for p in PANELS] if r not in self.rows
        }
        for row in notes:
            self.traces.append(go.Scatter(x=[], y=[], hoverinfo="skip", meta="empty", showlegend=False, **first))
            self.rows.append(row)
        rows = self.below_rows + self.rows
        fig.add_traces(self.below + self.traces, rows=rows, cols=[1] * len(rows))
        return notes


def add_loss(traces: Traces, rid, label: str, color: str, loss_rows, weight: float) -> None:
    """A run's training loss: smoothed, over its raw reads (faint) when smoothing is on."""
    steps, loss = _series(loss_rows)
    if len(steps) and weight:  # the raw reads stay visible, faint, behind the smoothed line
        raw = dict(opacity=0.25, line=dict(color=color, width=1))
        traces.add(1, rid, label, "loss raw", steps, loss, color, "loss %{y:.4f} (raw)", size=4, **raw)
    if len(steps):
        what = " (smoothed)" if weight else ""
        traces.add(1, rid, label, "loss", steps, smooth(loss, weight), color, f"loss %{{y:.4f}}{what}", size=6)


def add_eval(traces: Traces, rid, label: str, color: str, evals, metric: str | None) -> None:
    """A run's evaluation metric (its axis names the metric to come before the first evaluation)."""
    ev = eval_metric_rows(evals, metric)
    steps, values = _series(ev)
    if not len(steps) and metric:  # no evaluation yet: the axis still names the metric to come
        traces.metric_names.add(metric)
    if len(steps):
        name = str(ev["name"].iloc[0])
        name = metric if metric and metric.startswith(name) else name  # MNLI: accuracy on *_matched
        traces.metric_names.add(name)
        traces.eval_values += list(values)
        mode = _mode(len(steps), "lines+markers")
        traces.add(2, rid, label, "eval", steps, values, color, f"{name} %{{y:.4f}}", 7, mode=mode, cliponaxis=False)


def label_axes(fig: go.Figure, traces: Traces) -> None:
    """Each panel's axis titled; the metric's range fits its bounds (an empty accuracy axis: [0, 1])."""
    names = traces.metric_names
    metric_title = " / ".join(sorted(names)) if 0 < len(names) <= 2 else "eval metric"
    bounds = metric_bounds(names)
    unfilled = list(bounds) if all(map(math.isfinite, bounds)) else [0, 1]  # an empty accuracy axis: [0, 1]
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text=metric_title, row=2, col=1, range=eval_range(traces.eval_values, names) or unfilled)
    fig.update_yaxes(title_text="lr", row=3, col=1, rangemode="tozero", exponentformat="e")
    fig.update_yaxes(title_text="examples/s", row=4, col=1, rangemode="tozero")
    fig.update_xaxes(title_text="step", row=4, col=1)
    fig.update_xaxes(showticklabels=True)  # every panel shows its steps: a zoomed-in lower panel still reads
