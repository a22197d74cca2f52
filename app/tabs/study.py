"""The Study tab: the paper's findings from every finished run (app.study), with its four downloads."""

import gradio as gr

from moduletune.app import experiment as ex
from moduletune.app import views
from moduletune.app.figure_style import empty_figure


def build(ctx):
    """Lay out the tab and wire its events inside the Blocks being built; returns the Tab."""
    registry, tasks, private = ctx.registry, ctx.tasks, ctx.private

    with gr.Tab("Study", id="study", elem_id="tab-study") as tab_study:
        gr.Markdown(
            "The paper's findings regenerated from every finished run: the table of module families "
            "× tasks (mean ± std over seeds, n; chance and full fine-tuning rows), the layer-wise "
            "analysis, score against trainable share, and the paper's explanation put to the test — "
            "each family's mean |w| against its score (Spearman's ρ).",
            elem_classes="help",
        )
        with gr.Row():
            study_tasks = gr.Dropdown(
                tasks,
                value=[],
                multiselect=True,
                elem_id="study-tasks",
                scale=3,
                label="Tasks in the report (empty: every task with runs)",
            )
            study_task = gr.Dropdown(
                tasks, value=ex.DEFAULT_TASKS[0], label="Figures for task", elem_id="study-task", scale=1
            )
            study_go = gr.Button("Build the report", variant="primary", elem_id="study-go", scale=1)
        study_summary = gr.Markdown(
            "Press **Build the report** (the first one computes the model's weight magnitudes, a few seconds).",
            elem_id="study-summary",
        )
        study_table = gr.DataFrame(label="Study table", interactive=False, elem_id="study-table", wrap=True)
        with gr.Row():
            chart_layerwise = gr.Plot(show_label=False, elem_id="chart-layerwise")
            chart_study_frontier = gr.Plot(show_label=False, elem_id="chart-study-frontier")
        chart_mag_score = gr.Plot(show_label=False, elem_id="chart-magnitude-score")
        study_files = gr.File(
            label="Download: CSV, Markdown, LaTeX, self-contained HTML",
            file_count="multiple",
            elem_id="study-files",
            interactive=False,
        )

    def build_study(chosen, task_name):
        try:
            report, files = views.study(registry, chosen or None)
        except (ValueError, OSError) as err:
            empty = empty_figure("Study", f"Could not build the report: {err}")
            return f"⚠️ {err}", None, empty, empty, empty, None, gr.Dropdown()
        figs = views.study_figures(report, task_name)
        return (
            views.study_summary(report),
            report.table,
            figs["layerwise"],
            figs["efficiency"],
            figs["magnitude"],
            files,
            gr.Dropdown(
                choices=report.tasks or tasks,
                value=task_name if task_name in report.tasks else (report.tasks[0] if report.tasks else task_name),
            ),
        )

    study_outputs = [
        study_summary,
        study_table,
        chart_layerwise,
        chart_study_frontier,
        chart_mag_score,
        study_files,
        study_task,
    ]
    gr.on(
        [study_go.click, study_task.change],
        build_study,
        [study_tasks, study_task],
        study_outputs,
        trigger_mode="always_last",
        **private,
    )
    return tab_study
