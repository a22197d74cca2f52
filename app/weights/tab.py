"""The Weights tab: pre-trained weight magnitudes per module, and how far tuning moved each module."""

from dataclasses import dataclass
from typing import Any

import gradio as gr

from moduletune.app.figures.style import empty_figure
from moduletune.app.weights import models as model_views
from moduletune.app.weights.charts import (
    DELTAS_TITLE,
    NO_DELTAS,
    delta_by_layer,
    magnitude_distributions,
    magnitude_heatmap,
)


@dataclass
class WeightsTab:
    """The Weights tab's components by name: the magnitudes' choices and charts, the runs' deltas."""

    tab: gr.Tab
    model: gr.Textbox | gr.Dropdown  # a textbox, or in public mode a pick from the allow-list
    kind: gr.Radio
    by_layer: gr.Checkbox
    go: gr.Button
    msg: gr.Markdown
    magnitudes: gr.Plot
    heatmap: gr.Plot
    runs: gr.Dropdown
    deltas_go: gr.Button
    deltas: gr.Plot
    shown: gr.State

    def choices(self) -> dict[str, Any]:
        """The magnitudes handler's inputs, by its parameter names."""
        return dict(name=self.model, kind=self.kind, by_layer=self.by_layer)

    def drawn(self) -> list:
        """What drawing the magnitudes changes."""
        return [self.magnitudes, self.heatmap, self.msg, self.shown]


def build(ctx) -> WeightsTab:
    """Lay out the tab and wire its events inside the Blocks being built; returns its components by name."""
    tab = layout(ctx)
    wire(ctx, tab)
    return tab


def layout(ctx) -> WeightsTab:
    """The tab's components: the model's magnitudes above, the chosen runs' deltas below."""
    with gr.Tab("Weights", id="weights", elem_id="tab-weights") as tab:
        gr.Markdown(
            "How large are the pre-trained weights of each module? The paper ties LayerNorm's "
            "transferability to its far larger magnitudes.",
            elem_classes="help",
        )
        with gr.Row():
            model = ctx.model_box("weights-model", 3)
            kind = gr.Radio(["weight", "bias"], value="weight", label="Tensors", elem_id="weights-kind", scale=1)
            by_layer = gr.Checkbox(False, label="boxes per layer", elem_id="weights-by-layer", scale=1)
            go = gr.Button("Show magnitudes", variant="primary", elem_id="weights-go", scale=1)
        msg = gr.Markdown("", elem_id="weights-msg")
        magnitudes = gr.Plot(show_label=False, elem_id="chart-magnitudes")
        heatmap = gr.Plot(show_label=False, elem_id="chart-magnitude-heatmap")
        gr.Markdown("### How far did tuning move each module? ‖Δw‖/‖w‖ by layer", elem_classes="help")
        with gr.Row():
            runs = gr.Dropdown([], value=[], multiselect=True, label="Succeeded runs", elem_id="weights-runs", scale=4)
            deltas_go = gr.Button("Show deltas", elem_id="deltas-go", scale=1)
        deltas = gr.Plot(empty_figure(DELTAS_TITLE, NO_DELTAS), show_label=False, elem_id="chart-deltas")
        shown = gr.State(None)
    charts: dict[str, Any] = dict(msg=msg, magnitudes=magnitudes, heatmap=heatmap, deltas=deltas)
    return WeightsTab(
        tab=tab, model=model, kind=kind, by_layer=by_layer, go=go, runs=runs, deltas_go=deltas_go, shown=shown, **charts
    )


def wire(ctx, t: WeightsTab) -> None:
    """Show magnitudes (and a changed choice) draws them; the tab opening draws them once and lists the runs."""
    gr.on(
        [t.go.click, t.kind.change, t.by_layer.change],
        magnitudes_handler(t),
        None,
        t.drawn(),
        inputs_kwargs=t.choices(),
        **ctx.private,
    )
    t.tab.select(
        tab_handler(ctx, t), None, [*t.drawn(), t.runs], inputs_kwargs=dict(**t.choices(), shown=t.shown), **ctx.private
    )
    t.deltas_go.click(
        deltas_handler(ctx, t), None, [t.deltas, t.msg], inputs_kwargs=dict(run_ids=t.runs), **ctx.private
    )


def magnitudes_handler(t: WeightsTab):
    """The magnitudes' handler: the distributions and the heatmap of the model's weights (or why not)."""

    def show_magnitudes(name, kind, by_layer):
        try:
            mags = model_views.magnitudes(name)
        except (ValueError, OSError) as err:
            empty = empty_figure("Weight magnitudes", f"Could not load {name}: {err}")
            return {t.magnitudes: empty, t.heatmap: empty, t.msg: f"⚠️ {err}", t.shown: name}
        drawn = {t.magnitudes: magnitude_distributions(mags, kind, by_layer), t.heatmap: magnitude_heatmap(mags, kind)}
        return {**drawn, t.msg: "", t.shown: name}

    return show_magnitudes


def tab_handler(ctx, t: WeightsTab):
    """The tab opening's handler: the magnitudes drawn once a session, the succeeded runs listed every time."""
    registry, show_magnitudes = ctx.registry, magnitudes_handler(t)

    def on_weights_tab(name, kind, by_layer, shown):
        choices = {t.runs: gr.Dropdown(choices=model_views.scored_run_choices(registry))}
        if shown:  # already drawn in this session: only refresh the run list
            return {t.shown: shown, **choices}
        return {**show_magnitudes(name, kind, by_layer), **choices}

    return on_weights_tab


def deltas_handler(ctx, t: WeightsTab):
    """Show deltas' handler: how far tuning moved each module of the chosen runs, by layer."""
    registry = ctx.registry

    def show_deltas(run_ids):
        if not run_ids:
            return {t.deltas: empty_figure(DELTAS_TITLE, NO_DELTAS), t.msg: "Pick one or more succeeded runs."}
        try:
            return {t.deltas: delta_by_layer(model_views.run_deltas(registry, run_ids)), t.msg: ""}
        except (ValueError, OSError) as err:
            return {t.deltas: empty_figure(DELTAS_TITLE, NO_DELTAS), t.msg: f"⚠️ {err}"}

    return show_deltas
