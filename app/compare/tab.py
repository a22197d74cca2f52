"""The Compare tab: scores by family, the efficiency frontier, the layer x module heatmap, lr searches,
the selected runs' curves and config diff, and the paper-style results table."""

from dataclasses import dataclass
from typing import Any

import gradio as gr

from moduletune.app.compare import views as compare_views
from moduletune.app.experiment.form import DEFAULT_TASKS
from moduletune.app.figures.charts import FRONTIER_COSTS
from moduletune.app.runs import views


@dataclass
class CompareTab:
    """The Compare tab's components by name: the choices, the charts, the selected runs and the results table."""

    tab: gr.Tab
    task: gr.Dropdown
    layers: gr.Dropdown
    tag: gr.Dropdown
    cost: gr.Radio
    refresh: gr.Button
    score: gr.Plot
    frontier: gr.Plot
    heatmap: gr.Plot
    lr: gr.Plot
    runs: gr.Dropdown
    only_diff: gr.Checkbox
    curves: gr.Plot
    config_diff: gr.DataFrame
    results: gr.DataFrame
    results_note: gr.Markdown
    results_csv: gr.DownloadButton

    def choices(self) -> dict[str, Any]:
        """The handlers' inputs, by their parameter names."""
        return dict(task_name=self.task, layer_choice=self.layers, run_ids=self.runs, only=self.only_diff, tag=self.tag)


def build(ctx) -> CompareTab:
    """Lay out the tab and wire its events inside the Blocks being built; returns its components by name."""
    tab = layout(ctx)
    wire(ctx, tab)
    return tab


def layout(ctx) -> CompareTab:
    """The tab's components: the choices row, four charts, the selected runs, the results table."""
    with gr.Tab("Compare", id="compare", elem_id="tab-compare") as tab:
        choices = choices_layout(ctx)
        with gr.Row():
            score = gr.Plot(show_label=False, elem_id="chart-score")
            frontier = gr.Plot(show_label=False, elem_id="chart-frontier")
        with gr.Row():
            heatmap = gr.Plot(show_label=False, elem_id="chart-heatmap")
            lr = gr.Plot(show_label=False, elem_id="chart-lr-search")
        gr.Markdown("### Selected runs", elem_classes="help")
        with gr.Row():
            runs = gr.Dropdown(
                [],
                value=[],
                multiselect=True,
                label="Runs to overlay (default: the task's latest five)",
                elem_id="compare-runs",
                scale=4,
            )
            only_diff = gr.Checkbox(True, label="config: only differences", elem_id="only-diff", scale=1)
        curves = gr.Plot(show_label=False, elem_id="chart-curves")
        config_diff = gr.DataFrame(
            label="Config of the selected runs", interactive=False, elem_id="config-diff", wrap=True
        )
        gr.Markdown(
            "### Results table: module families × tasks (mean ± std over seeds (n), trainable %)", elem_classes="help"
        )
        results = gr.DataFrame(label="Results", interactive=False, elem_id="results-table", wrap=True)
        results_note = gr.Markdown("", elem_id="results-note", elem_classes="help")
        results_csv = gr.DownloadButton("Download CSV", size="sm", elem_id="results-csv")
    charts: dict[str, Any] = dict(
        score=score, frontier=frontier, heatmap=heatmap, lr=lr, curves=curves, config_diff=config_diff
    )
    table: dict[str, Any] = dict(results=results, results_note=results_note, results_csv=results_csv)
    return CompareTab(tab=tab, **choices, runs=runs, only_diff=only_diff, **charts, **table)


def choices_layout(ctx) -> dict[str, Any]:
    """The task, layer choice, tag and cost to compare by, and Refresh."""
    with gr.Row():
        task = gr.Dropdown(ctx.tasks, value=DEFAULT_TASKS[0], label="Task", elem_id="compare-task", scale=1)
        layers = gr.Dropdown(
            [views.ALL],
            value=views.ALL,
            label="Layer choice (results table)",
            elem_id="compare-layers",
            allow_custom_value=True,
            scale=1,
        )
        tag = gr.Dropdown([views.ALL], value=views.ALL, label="Tag (only runs with it)", elem_id="compare-tag", scale=1)
        cost = gr.Radio(
            [(words, cost) for cost, (words, _, _) in FRONTIER_COSTS.items()],
            value="trainable_pct",
            label="Efficiency against",
            elem_id="frontier-cost",
            scale=1,
        )
        refresh = gr.Button("Refresh", size="sm", elem_id="compare-refresh", scale=0, min_width=90)
    return dict(task=task, layers=layers, tag=tag, cost=cost, refresh=refresh)


def wire(ctx, t: CompareTab) -> None:
    """Any choice redraws everything; the selected runs (or only-diff) redraw their curves and config diff."""
    gr.on(
        [t.tab.select, t.refresh.click, t.task.change, t.layers.change, t.tag.input, t.cost.input],
        refresh_handler(ctx, t),
        None,
        [
            t.score,
            t.frontier,
            t.heatmap,
            t.lr,
            t.curves,
            t.config_diff,
            t.results,
            t.results_note,
            t.results_csv,
            t.runs,
            t.layers,
            t.tag,
        ],
        inputs_kwargs=dict(**t.choices(), cost=t.cost),
        **ctx.private,
    )
    gr.on(
        [t.runs.change, t.only_diff.change],
        selected_handler(ctx, t),
        None,
        [t.curves, t.config_diff],
        inputs_kwargs=t.choices(),
        trigger_mode="always_last",
        **ctx.private,
    )


def refresh_handler(ctx, t: CompareTab):
    """The whole tab's handler: every chart and table for the choices, and the choices' own options."""
    registry = ctx.registry

    def refresh_compare(task_name, layer_choice, run_ids, only, tag, cost):
        view = compare_views.compare(registry, task_name, layer_choice, run_ids, only, tag, cost)
        choices = views.run_choices(registry, status="succeeded", task=task_name)
        layer_choices = compare_views.layer_filter_choices(registry)
        return {
            t.score: view["score_by_family"],
            t.frontier: view["efficiency_frontier"],
            t.heatmap: view["layer_module_heatmap"],
            t.lr: view["lr_searches"],
            t.curves: view["training_curves"],
            t.config_diff: view["config_diff"],
            t.results: view["results_table"],
            t.results_note: compare_views.results_note(view["results_table"], layer_choice, layer_choices),
            t.results_csv: compare_views.results_csv_file(registry, layer_choice),
            t.runs: gr.Dropdown(choices=choices, value=[i for i in (run_ids or []) if i in {c[1] for c in choices}]),
            t.layers: gr.Dropdown(choices=layer_choices),
            t.tag: gr.Dropdown(choices=[views.ALL, *views.tag_choices(registry)]),
        }

    return refresh_compare


def selected_handler(ctx, t: CompareTab):
    """The selected runs' handler: their curves and config diff."""
    registry = ctx.registry

    def refresh_selected(task_name, layer_choice, run_ids, only, tag):
        view = compare_views.compare(registry, task_name, layer_choice, run_ids, only, tag)
        return {t.curves: view["training_curves"], t.config_diff: view["config_diff"]}

    return refresh_selected
