"""The Study tab: every study (a sweep or the paper preset) with its progress and ETA; one study opened shows its
report filling in as its runs finish (pending cells say so), its runs, and Cancel (confirmed), Pause, Resume,
Retry failed and Raise; with no study open, the report of every finished run. ?tab=study&study=N opens a study,
and the address follows the pick, so a reload keeps it."""

import gradio as gr

from moduletune.app.experiment.form import DEFAULT_TASKS
from moduletune.app.figures.style import empty_figure
from moduletune.app.public.actions import study_action
from moduletune.app.public.errors import visitor_message
from moduletune.app.study import views as study_views

TIMER_SECONDS = 3.0  # the live list and the open study's progress, while the tab is open
EVERY_RUN = 0  # the picker's "every finished run" entry (no study open)
# The picked study into the address bar, so a reload or a shared link opens it (read back by on_load).
STUDY_URL_JS = """(study) => {
  const url = new URL(window.location.href);
  url.searchParams.set("tab", "study");
  if (!study) { url.searchParams.delete("study"); } else { url.searchParams.set("study", String(study)); }
  window.history.replaceState(window.history.state, "", url);
}"""
ACTIONS = ("pause", "resume", "retry", "raise")


def study_of_link(params) -> int | None:
    """The study a link's ?study=N names (None for none or a value that is no id)."""
    text = str((params or {}).get("study") or "").strip().lstrip("#")
    return int(text) if text.isdigit() and 0 < int(text) < 2**31 else None


def build(ctx):
    """Lay out the tab and wire its events inside the Blocks being built; returns the Tab and its live timer."""
    registry, tasks, private, who = ctx.registry, ctx.tasks, ctx.private, ctx.who
    owner_of = (lambda request, profile: None) if ctx.public is None else ctx.viewer_of

    with gr.Tab("Study", id="study", elem_id="tab-study") as tab_study:
        gr.Markdown(
            "Every study you queued (a sweep, or the paper's preset) with its progress; open one to watch its "
            "report fill in as its runs finish, and to pause, resume, cancel or retry it as a whole. With no study "
            "open, the report covers every finished run: the table of module families × tasks (mean ± std over "
            "seeds, n; chance and full fine-tuning rows), the layer-wise analysis, score against trainable share, "
            "and each family's mean |w| against its score (Spearman's ρ).",
            elem_classes="help",
        )
        studies_table = gr.DataFrame(
            None,
            label="Studies (newest first; click a row to open it)",
            interactive=False,
            elem_id="studies-table",
            max_height=260,
            wrap=True,
        )
        with gr.Row():
            study_select = gr.Dropdown(
                [("every finished run (no study)", EVERY_RUN)],
                value=EVERY_RUN,
                label="Study",
                elem_id="study-select",
                scale=3,
            )
            refresh = gr.Button("Refresh", size="sm", elem_id="study-refresh", scale=0, min_width=90)
        study_progress = gr.Markdown("", elem_id="study-progress")
        with gr.Row():
            cancel = gr.Button("Cancel study…", variant="stop", size="sm", elem_id="study-cancel", interactive=False)
            pause = gr.Button("Pause", size="sm", elem_id="study-pause", interactive=False)
            resume = gr.Button("Resume", size="sm", elem_id="study-resume", interactive=False)
            retry = gr.Button("Retry failed", size="sm", elem_id="study-retry", interactive=False)
            raise_ = gr.Button("Run it first", size="sm", elem_id="study-raise", interactive=False)
        with gr.Row(visible=False) as confirm_row:
            confirm_text = gr.Markdown("", elem_id="study-cancel-text")
            confirm = gr.Button("Yes, cancel the study", variant="stop", size="sm", elem_id="study-cancel-confirm")
            keep = gr.Button("Keep it", size="sm", elem_id="study-cancel-keep")
        action_msg = gr.Markdown("", elem_id="study-action-msg")
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
                tasks, value=DEFAULT_TASKS[0], label="Figures for task", elem_id="study-task", scale=1
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
        with gr.Accordion("The study's runs", open=False):
            study_runs = gr.DataFrame(interactive=False, elem_id="study-runs", wrap=True, max_height=320)
        picked = gr.State(EVERY_RUN)
        timer = gr.Timer(TIMER_SECONDS, active=False)

    def choices(request, profile):
        owner = owner_of(request, profile)
        return [("every finished run (no study)", EVERY_RUN), *study_views.study_choices(registry, owner)]

    def panel(study_id, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        """The list, the picker, the open study's progress, buttons, live table and runs."""
        owner = owner_of(request, profile)
        listing = study_views.studies_table(registry, owner)
        dropdown = gr.Dropdown(choices=choices(request, profile), value=study_id or EVERY_RUN)
        if not study_id:
            off = [gr.Button(interactive=False)] * 5
            return listing, dropdown, "", *off, gr.skip(), None
        try:
            study = registry.study(int(study_id))
        except Exception as err:
            off = [gr.Button(interactive=False)] * 5
            return listing, dropdown, f"⚠️ {visitor_message(err, 'open the study')}", *off, None, None
        status = study.status
        buttons = [
            gr.Button(interactive=status not in ("cancelled", "cancelling", "done", "failed")),
            gr.Button(interactive=study.state == "active" and study.progress.active > 0),
            gr.Button(interactive=study.state == "paused"),
            gr.Button(interactive=bool(registry.retryable_in_study(study.id))),
            gr.Button(
                "Back behind single runs" if study.priority > 10 else "Run it first",
                interactive=ctx.public is None and study.progress.queued > 0,
            ),
        ]
        table = study_views.live_table(registry, study.id)
        return (
            listing,
            dropdown,
            study_views.study_summary(registry, study),
            *buttons,
            table,
            study_views.study_runs_table(registry, study.id),
        )

    panel_targets = [studies_table, study_select, study_progress, cancel, pause, resume, retry, raise_]
    panel_targets += [study_table, study_runs]
    quiet = dict(show_progress="hidden", **private)
    timer.tick(panel, picked, panel_targets, trigger_mode="always_last", **quiet)
    gr.on([refresh.click, tab_study.select], panel, picked, panel_targets, **quiet)

    def build_study(chosen, task_name, study_id):
        """The report (the open study's, else every finished run's) with its figures and four downloads."""
        try:
            report, files = study_views.report_files(registry, chosen or None, study_id=study_id or None)
        except (ValueError, OSError) as err:
            empty = empty_figure("Study", f"Could not build the report: {err}")
            return f"⚠️ {err}", None, empty, empty, empty, None, gr.Dropdown()
        figs = study_views.report_figures(report, task_name)
        return (
            study_views.report_summary(report),
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
        [study_tasks, study_task, picked],
        study_outputs,
        trigger_mode="always_last",
        **private,
    )

    def on_pick(study_id):
        return int(study_id or EVERY_RUN), "", gr.Row(visible=False)

    def on_row(evt: gr.SelectData):
        row = evt.row_value or []
        try:
            return int(row[0]), "", gr.Row(visible=False)
        except (IndexError, TypeError, ValueError):
            return gr.skip(), gr.skip(), gr.skip()

    for chosen in (
        study_select.input(on_pick, study_select, [picked, action_msg, confirm_row], **private),
        studies_table.select(on_row, None, [picked, action_msg, confirm_row], **private),
    ):
        chosen.then(panel, picked, panel_targets, **quiet).then(None, study_select, None, js=STUDY_URL_JS)

    def on_load(request: gr.Request = None):
        """A link's ?study=N opens that study."""
        found = study_of_link(request.query_params if request else {})
        return found if found is not None else gr.skip()

    ctx.demo.load(on_load, None, picked, **private).then(panel, picked, panel_targets, **quiet)

    def ask_cancel(study_id):
        """The confirmation: what a cancel will do, in numbers."""
        if not study_id:
            return "Open a study first.", gr.Row(visible=False)
        study = registry.study(int(study_id))
        p = study.progress
        text = (
            f"Cancel **study #{study.id}**? Its {p.queued + p.interrupted} queued runs never start and its "
            f"{p.running} running ones stop at their next step; finished runs are kept."
        )
        return text, gr.Row(visible=True)

    cancel.click(ask_cancel, picked, [confirm_text, confirm_row], **private)
    keep.click(lambda: ("", gr.Row(visible=False)), None, [action_msg, confirm_row], **private)

    def act(action: str):
        """The handler of one study action: (message, the cancel confirmation hidden)."""

        def handler(study_id, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
            if not study_id:
                return "Open a study first.", gr.Row(visible=False)
            if action == "raise" and registry.study(int(study_id)).priority > 10:
                chosen = "lower"  # the button toggles: a raised study goes back behind single runs
            else:
                chosen = action
            try:
                record = study_action(registry, int(study_id), chosen, who(request, profile))
            except Exception as err:
                return f"⚠️ {visitor_message(err, chosen + ' the study')}", gr.Row(visible=False)
            done = {
                "cancel": "cancelled: no queued run of it will start; running ones stop at their next step",
                "pause": "paused: its queued runs wait, no worker takes them",
                "resume": "resumed: its queued runs are back with the workers",
                "retry": f"has {len(record.get('retried', []))} failed runs queued again",
                "raise": "now goes first: its queued runs are taken before single runs",
                "lower": "is back behind single runs",
            }[chosen]
            return f"✅ Study #{int(study_id)} {done}.", gr.Row(visible=False)

        handler.__name__ = f"study_{action}"
        return handler

    for button, action in ((confirm, "cancel"), *zip((pause, resume, retry, raise_), ACTIONS)):
        button.click(act(action), picked, [action_msg, confirm_row], **private).then(
            panel, picked, panel_targets, **quiet
        )
    return tab_study, timer
