"""The Weights tab: pre-trained weight magnitudes per module, and how far tuning moved each module."""

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


def build(ctx):
    """Lay out the tab and wire its events inside the Blocks being built; returns the Tab."""
    registry, model_box, private = ctx.registry, ctx.model_box, ctx.private

    with gr.Tab("Weights", id="weights", elem_id="tab-weights") as tab_weights:
        gr.Markdown(
            "How large are the pre-trained weights of each module? The paper ties LayerNorm's "
            "transferability to its far larger magnitudes.",
            elem_classes="help",
        )
        with gr.Row():
            weights_model = model_box("weights-model", 3)
            weights_kind = gr.Radio(
                ["weight", "bias"], value="weight", label="Tensors", elem_id="weights-kind", scale=1
            )
            weights_by_layer = gr.Checkbox(False, label="boxes per layer", elem_id="weights-by-layer", scale=1)
            weights_go = gr.Button("Show magnitudes", variant="primary", elem_id="weights-go", scale=1)
        weights_msg = gr.Markdown("", elem_id="weights-msg")
        chart_magnitudes = gr.Plot(show_label=False, elem_id="chart-magnitudes")
        chart_mag_heatmap = gr.Plot(show_label=False, elem_id="chart-magnitude-heatmap")
        gr.Markdown("### How far did tuning move each module? ‖Δw‖/‖w‖ by layer", elem_classes="help")
        with gr.Row():
            weights_runs = gr.Dropdown(
                [], value=[], multiselect=True, label="Succeeded runs", elem_id="weights-runs", scale=4
            )
            deltas_go = gr.Button("Show deltas", elem_id="deltas-go", scale=1)
        chart_deltas = gr.Plot(empty_figure(DELTAS_TITLE, NO_DELTAS), show_label=False, elem_id="chart-deltas")
        weights_state = gr.State(None)

    def show_magnitudes(name, kind, by_layer):
        try:
            mags = model_views.magnitudes(name)
        except (ValueError, OSError) as err:
            empty = empty_figure("Weight magnitudes", f"Could not load {name}: {err}")
            return empty, empty, f"⚠️ {err}", name
        return (magnitude_distributions(mags, kind, by_layer), magnitude_heatmap(mags, kind), "", name)

    weights_outputs = [chart_magnitudes, chart_mag_heatmap, weights_msg, weights_state]
    gr.on(
        [weights_go.click, weights_kind.change, weights_by_layer.change],
        show_magnitudes,
        [weights_model, weights_kind, weights_by_layer],
        weights_outputs,
        **private,
    )

    def on_weights_tab(name, kind, by_layer, shown):
        choices = gr.Dropdown(choices=model_views.scored_run_choices(registry))
        if shown:  # already drawn in this session: only refresh the run list
            return (gr.skip(), gr.skip(), gr.skip(), shown, choices)
        return (*show_magnitudes(name, kind, by_layer), choices)

    tab_weights.select(
        on_weights_tab,
        [weights_model, weights_kind, weights_by_layer, weights_state],
        [*weights_outputs, weights_runs],
        **private,
    )

    def show_deltas(run_ids):
        if not run_ids:
            return empty_figure(DELTAS_TITLE, NO_DELTAS), "Pick one or more succeeded runs."
        try:
            return delta_by_layer(model_views.run_deltas(registry, run_ids)), ""
        except (ValueError, OSError) as err:
            return empty_figure(DELTAS_TITLE, NO_DELTAS), f"⚠️ {err}"

    deltas_go.click(show_deltas, weights_runs, [chart_deltas, weights_msg], **private)
    return tab_weights
