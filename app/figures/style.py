"""What every figure shares, so a family looks the same in each chart: colours, markers, layout, references.

Fixed family colours and markers, one layout, explanatory empty figures, and the chance and full fine-tuning
references drawn on a score axis; used by app.figures.charts, app.weights.charts and app.study.analysis.
"""

from __future__ import annotations

import math
import zlib

import pandas as pd
import plotly.graph_objects as go

from moduletune.app.figures import pooling
from moduletune.app.figures.labels import canonical_modules
from moduletune.tuning.methods import METHOD_TABLE
from moduletune.tuning.modules import FAMILY_TABLE

NO_RUNS = "No finished runs yet — submit one in the Experiment tab"
TEMPLATE = "plotly_white"
HEIGHT = 450

FAMILY_COLORS = {f.name: f.color for f in FAMILY_TABLE}
METHOD_COLORS = {m.name: m.color for m in METHOD_TABLE}  # every LoRA in one colour, every (IA)³ in another
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
LOG_FLOOR = 1e-6  # smallest |w| drawn on a log axis (the magnitudes histogram's first edge)


# ---------------------------------------------------------------- colours, markers, layout


def family_color(modules) -> str:
    """The fixed colour of a module set; random controls are grey and combinations get a stable extra colour."""
    key = canonical_modules(modules)
    if key.startswith("random"):
        return RANDOM_COLOR
    if key in FAMILY_COLORS:
        return FAMILY_COLORS[key]
    if key.partition(":")[0] in METHOD_COLORS:
        return METHOD_COLORS[key.partition(":")[0]]
    return COMBO_COLORS[zlib.crc32(key.encode()) % len(COMBO_COLORS)]


def is_random(modules) -> bool:
    """True for the lottery-ticket control random:<family>."""
    return canonical_modules(modules).startswith("random")


def layout(fig: go.Figure, title: str, height: int = HEIGHT, **kwargs) -> go.Figure:
    """The shared look: white template, a left-aligned title, a readable height and margins."""
    fig.update_layout(
        template=TEMPLATE, title=dict(text=title, x=0.01), height=height, margin=dict(l=60, r=30, t=70, b=55), **kwargs
    )
    return fig


def empty_figure(title: str, message: str = NO_RUNS) -> go.Figure:
    """A blank chart that explains why it is blank, so the UI never shows an error or a bare axis."""
    fig = go.Figure()
    fig.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=15, color="#666666")
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return layout(fig, title)


def bar_marker(group: str) -> dict:
    """Bar style of a family: its colour; random controls grey with a hatch."""
    marker = dict(color=family_color(group))
    if is_random(group):
        marker["pattern"] = dict(shape="/", fgcolor="#555555")
    return marker


def scatter_marker(group: str) -> dict:
    """Marker style of a family: its colour; random controls as open grey diamonds."""
    if is_random(group):
        return dict(color=RANDOM_COLOR, symbol="diamond-open", size=9, line=dict(width=2))
    return dict(color=family_color(group), size=9, line=dict(width=0.5, color="white"))


# ---------------------------------------------------------------- references on a score axis


def mix_note(d: pd.DataFrame) -> str:
    """' · mixes lr, max_train' when the plotted runs differ in more than task, modules and layers."""
    names = pooling.mixed_settings(d)
    return f" · mixes {', '.join(names)}" if names else ""


def add_references(
    fig: go.Figure, chance: float, full_mean: float, full_std: float, full_failed: bool = False, **where
) -> None:
    """The chance level (dotted) and the full fine-tuning mean ± std (dashed line, shaded band); when full
    fine-tuning ran but did not learn, a sentence saying so instead of a line."""
    if not math.isnan(chance):
        fig.add_hline(
            y=chance,
            line_dash="dot",
            line_color="#888888",
            annotation_text=f"chance {chance:.3f}",
            annotation_position="bottom right",
            **where,
        )
    if math.isnan(full_mean) and full_failed:
        fig.add_annotation(
            text=pooling.FULL_FAILED,
            xref="x domain",  # a subplot's own axes when `where` names its row and col
            yref="y domain",
            x=1,
            y=1,
            xanchor="right",
            yanchor="bottom",
            showarrow=False,
            font=dict(color=FAMILY_COLORS["full"]),
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


def score_range(values, chance: float, full_mean: float) -> list[float] | None:
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


def hover_lr(lr) -> str:
    """A learning rate as hover text ('0.003'), or '' when the run has none."""
    return "" if lr is None or (isinstance(lr, float) and math.isnan(lr)) else f"{lr:g}"


# ---------------------------------------------------------------- runs and log axes


def run_color(index: int) -> str:
    """The colour of the index-th run in a figure that tells runs apart (RUN_COLORS, cycled)."""
    return RUN_COLORS[index % len(RUN_COLORS)]


def decade_axis(values) -> dict:
    """Log-axis settings with one labelled tick per power of ten ('1e-4', '1e-3', ...) and faint unlabelled minor
    grid lines, over whole decades that hold the values: Plotly's own '2 5' minor labels read as values."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x)) and float(x) > 0]
    if not v:
        return dict(type="log")
    lo, hi = math.log10(min(v)), math.log10(max(v))
    start, end = math.floor(lo), math.ceil(hi)
    if end == start:  # at least two labelled ticks
        end += 1
    # a point on a decade line would sit on the frame, half clipped: leave it a little room
    start -= 0.1 if lo - start < 0.05 else 0
    end += 0.1 if end - hi < 0.05 else 0
    decades = range(math.ceil(start), math.floor(end) + 1)
    return dict(
        type="log",
        range=[start, end],
        tickvals=[10.0**k for k in decades],
        ticktext=[f"1e{k}" for k in decades],
        minor=dict(dtick="D1", showgrid=True, gridcolor="#f2f2f2"),
    )
