"""The Compare tab: scores by family, the efficiency frontier, the layer x module heatmap, lr searches,
the selected runs' curves and config diff, and the paper-style results table."""

import gradio as gr

from moduletune.app.compare import views as compare_views
from moduletune.app.experiment.form import DEFAULT_TASKS
from moduletune.app.figures.charts import FRONTIER_COSTS
from moduletune.app.runs import views


def build(ctx):
    """Lay out the tab and wire its events inside the Blocks being built; returns the Tab."""
    registry, tasks, private = ctx.registry, ctx.tasks, ctx.private

    with gr.Tab("Compare", id="compare", elem_id="tab-compare") as tab_compare:
        with gr.Row():
            compare_task = gr.Dropdown(tasks, value=DEFAULT_TASKS[0], label="Task", elem_id="compare-task", scale=1)
            compare_layers = gr.Dropdown(
                [views.ALL],
                value=views.ALL,
                label="Layer choice (results table)",
                elem_id="compare-layers",
                allow_custom_value=True,
                scale=1,
            )
            compare_tag = gr.Dropdown(
                [views.ALL], value=views.ALL, label="Tag (only runs with it)", elem_id="compare-tag", scale=1
            )
            frontier_cost = gr.Radio(
                [(words, cost) for cost, (words, _, _) in FRONTIER_COSTS.items()],
                value="trainable_pct",
                label="Efficiency against",
                elem_id="frontier-cost",
                scale=1,
            )
            compare_refresh = gr.Button("Refresh", size="sm", elem_id="compare-refresh", scale=0, min_width=90)
        with gr.Row():
            chart_score = gr.Plot(show_label=False, elem_id="chart-score")
            chart_frontier = gr.Plot(show_label=False, elem_id="chart-frontier")
        with gr.Row():
            chart_heatmap = gr.Plot(show_label=False, elem_id="chart-heatmap")
            chart_lr = gr.Plot(show_label=False, elem_id="chart-lr-search")
        gr.Markdown("### Selected runs", elem_classes="help")
        with gr.Row():
            compare_runs = gr.Dropdown(
                [],
                value=[],
                multiselect=True,
                label="Runs to overlay (default: the task's latest five)",
                elem_id="compare-runs",
                scale=4,
            )
            only_diff = gr.Checkbox(True, label="config: only differences", elem_id="only-diff", scale=1)
        chart_curves = gr.Plot(show_label=False, elem_id="chart-curves")
        config_diff = gr.DataFrame(
            label="Config of the selected runs", interactive=False, elem_id="config-diff", wrap=True
        )
        gr.Markdown(
            "### Results table: module families × tasks (mean ± std over seeds (n), trainable %)", elem_classes="help"
        )
        results_table = gr.DataFrame(label="Results", interactive=False, elem_id="results-table", wrap=True)
        results_note = gr.Markdown("", elem_id="results-note", elem_classes="help")
        results_csv = gr.DownloadButton("Download CSV", size="sm", elem_id="results-csv")

    def refresh_compare(task_name, layer_choice, run_ids, only, tag, cost):
        view = compare_views.compare(registry, task_name, layer_choice, run_ids, only, tag, cost)
        choices = views.run_choices(registry, status="succeeded", task=task_name)
        layer_choices = compare_views.layer_filter_choices(registry)
        return (
            view["score_by_family"],
            view["efficiency_frontier"],
            view["layer_module_heatmap"],
            view["lr_searches"],
            view["training_curves"],
            view["config_diff"],
            view["results_table"],
            compare_views.results_note(view["results_table"], layer_choice, layer_choices),
            compare_views.results_csv_file(registry, layer_choice),
            gr.Dropdown(choices=choices, value=[i for i in (run_ids or []) if i in {c[1] for c in choices}]),
            gr.Dropdown(choices=layer_choices),
            gr.Dropdown(choices=[views.ALL, *views.tag_choices(registry)]),
        )

    compare_outputs = [
        chart_score,
        chart_frontier,
        chart_heatmap,
        chart_lr,
        chart_curves,
        config_diff,
        results_table,
        results_note,
        results_csv,
        compare_runs,
        compare_layers,
        compare_tag,
    ]
    gr.on(
        [
            tab_compare.select,
            compare_refresh.click,
            compare_task.change,
            compare_layers.change,
            compare_tag.input,
            frontier_cost.input,
        ],
        refresh_compare,
        [compare_task, compare_layers, compare_runs, only_diff, compare_tag, frontier_cost],
        compare_outputs,
        **private,
    )

    def refresh_selected(task_name, layer_choice, run_ids, only, tag):
        view = compare_views.compare(registry, task_name, layer_choice, run_ids, only, tag)
        return view["training_curves"], view["config_diff"]

    gr.on(
        [compare_runs.change, only_diff.change],
        refresh_selected,
        [compare_task, compare_layers, compare_runs, only_diff, compare_tag],
        [chart_curves, config_diff],
        trigger_mode="always_last",
        **private,
    )
    return tab_compare
