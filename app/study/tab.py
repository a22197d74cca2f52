"""The Study tab: every study (a sweep or the paper preset) with its progress and ETA; one study opened shows its
report filling in as its runs finish (pending cells say so), its runs, and Cancel (confirmed), Pause, Resume,
Retry failed and Raise; with no study open, the report of every finished run. ?tab=study&study=N opens a study,
and the address follows the pick, so a reload keeps it."""

from dataclasses import dataclass
from typing import Any

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
HELP = (
    "Every study you queued (a sweep, or the paper's preset) with its progress; open one to watch its "
    "report fill in as its runs finish, and to pause, resume, cancel or retry it as a whole. With no study "
    "open, the report covers every finished run: the table of module families × tasks (mean ± std over "
    "seeds, n; chance and full fine-tuning rows), the layer-wise analysis, score against trainable share, "
    "and each family's mean |w| against its score (Spearman's ρ)."
)


def study_of_link(params) -> int | None:
    """The study a link's ?study=N names (None for none or a value that is no id)."""
    text = str((params or {}).get("study") or "").strip().lstrip("#")
    return int(text) if text.isdigit() and 0 < int(text) < 2**31 else None


@dataclass
class StudyTab:
    """The Study tab's components by name: the studies, the open study's controls, and the report."""

    tab: gr.Tab
    studies: gr.DataFrame
    select: gr.Dropdown
    refresh: gr.Button
    progress: gr.Markdown
    cancel: gr.Button
    pause: gr.Button
    resume: gr.Button
    retry: gr.Button
    raise_: gr.Button
    confirm_row: gr.Row
    confirm_text: gr.Markdown
    confirm: gr.Button
    keep: gr.Button
    action_msg: gr.Markdown
    tasks: gr.Dropdown
    task: gr.Dropdown
    go: gr.Button
    summary: gr.Markdown
    table: gr.DataFrame
    layerwise: gr.Plot
    frontier: gr.Plot
    magnitude_score: gr.Plot
    files: gr.File
    runs: gr.DataFrame
    picked: gr.State
    timer: gr.Timer

    def buttons(self) -> dict:
        """The open study's action buttons by action."""
        return dict(cancel=self.cancel, pause=self.pause, resume=self.resume, retry=self.retry, raise_=self.raise_)

    def study(self) -> dict[str, Any]:
        """The input of the panel and of the actions: the open study's id."""
        return {"study_id": self.picked}

    def panel(self) -> list:
        """What the panel handler may change."""
        return [self.studies, self.select, self.progress, *self.buttons().values(), self.table, self.runs]

    def report(self) -> list:
        """What building the report changes."""
        return [self.summary, self.table, self.layerwise, self.frontier, self.magnitude_score, self.files, self.task]


def build(ctx) -> StudyTab:
    """Lay out the tab and wire its events inside the Blocks being built; returns its components by name."""
    tab = layout(ctx)
    wire_panel(ctx, tab)
    wire_report(ctx, tab)
    wire_actions(ctx, tab)
    return tab


def layout(ctx) -> StudyTab:
    """The tab's components: the studies and the open study's controls above, the report below."""
    with gr.Tab("Study", id="study", elem_id="tab-study") as tab:
        gr.Markdown(HELP, elem_classes="help")
        studies = controls_layout()
        report = report_layout(ctx)
        picked = gr.State(EVERY_RUN)
        timer = gr.Timer(TIMER_SECONDS, active=False)
    return StudyTab(tab=tab, **studies, **report, picked=picked, timer=timer)


def controls_layout() -> dict[str, Any]:
    """The studies table, the picker and the open study's buttons (Cancel asks first)."""
    studies = gr.DataFrame(
        None,
        label="Studies (newest first; click a row to open it)",
        interactive=False,
        elem_id="studies-table",
        max_height=260,
        wrap=True,
    )
    with gr.Row():
        select = gr.Dropdown(
            [("every finished run (no study)", EVERY_RUN)],
            value=EVERY_RUN,
            label="Study",
            elem_id="study-select",
            scale=3,
        )
        refresh = gr.Button("Refresh", size="sm", elem_id="study-refresh", scale=0, min_width=90)
    progress = gr.Markdown("", elem_id="study-progress")
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
    return dict(
        studies=studies,
        select=select,
        refresh=refresh,
        progress=progress,
        cancel=cancel,
        pause=pause,
        resume=resume,
        retry=retry,
        raise_=raise_,
        confirm_row=confirm_row,
        confirm_text=confirm_text,
        confirm=confirm,
        keep=keep,
        action_msg=action_msg,
    )


def report_layout(ctx) -> dict[str, Any]:
    """The report's choices, its summary, table, three figures, downloads and the study's runs."""
    with gr.Row():
        tasks = gr.Dropdown(
            ctx.tasks,
            value=[],
            multiselect=True,
            elem_id="study-tasks",
            scale=3,
            label="Tasks in the report (empty: every task with runs)",
        )
        task = gr.Dropdown(ctx.tasks, value=DEFAULT_TASKS[0], label="Figures for task", elem_id="study-task", scale=1)
        go = gr.Button("Build the report", variant="primary", elem_id="study-go", scale=1)
    summary = gr.Markdown(
        "Press **Build the report** (the first one computes the model's weight magnitudes, a few seconds).",
        elem_id="study-summary",
    )
    table = gr.DataFrame(label="Study table", interactive=False, elem_id="study-table", wrap=True)
    with gr.Row():
        layerwise = gr.Plot(show_label=False, elem_id="chart-layerwise")
        frontier = gr.Plot(show_label=False, elem_id="chart-study-frontier")
    magnitude_score = gr.Plot(show_label=False, elem_id="chart-magnitude-score")
    files = gr.File(
        label="Download: CSV, Markdown, LaTeX, self-contained HTML",
        file_count="multiple",
        elem_id="study-files",
        interactive=False,
    )
    with gr.Accordion("The study's runs", open=False):
        runs = gr.DataFrame(interactive=False, elem_id="study-runs", wrap=True, max_height=320)
    return dict(
        tasks=tasks,
        task=task,
        go=go,
        summary=summary,
        table=table,
        layerwise=layerwise,
        frontier=frontier,
        magnitude_score=magnitude_score,
        files=files,
        runs=runs,
    )


def wire_panel(ctx, t: StudyTab) -> None:
    """The live panel (timer, Refresh, the tab opening) and a pick (the picker, a row, a link's ?study=)."""
    panel, picked, targets = panel_handler(ctx, t), t.study(), t.panel()
    t.timer.tick(panel, None, targets, inputs_kwargs=picked, trigger_mode="always_last", **ctx.quiet)
    gr.on([t.refresh.click, t.tab.select], panel, None, targets, inputs_kwargs=picked, **ctx.quiet)
    chosen_outputs = [t.picked, t.action_msg, t.confirm_row]
    for chosen in (
        t.select.input(pick_handler(t), None, chosen_outputs, inputs_kwargs=dict(study_id=t.select), **ctx.private),
        t.studies.select(row_handler(t), None, chosen_outputs, **ctx.private),
    ):
        chosen.then(panel, None, targets, inputs_kwargs=picked, **ctx.quiet).then(None, t.select, None, js=STUDY_URL_JS)
    ctx.demo.load(on_load, None, t.picked, **ctx.private).then(panel, None, targets, inputs_kwargs=picked, **ctx.quiet)


def wire_report(ctx, t: StudyTab) -> None:
    """Build the report (and redraw it for another task's figures)."""
    gr.on(
        [t.go.click, t.task.change],
        report_handler(ctx, t),
        None,
        t.report(),
        inputs_kwargs=dict(chosen=t.tasks, task_name=t.task, study_id=t.picked),
        trigger_mode="always_last",
        **ctx.private,
    )


def wire_actions(ctx, t: StudyTab) -> None:
    """Cancel asks first; confirmed, and Pause, Resume, Retry failed and Raise act, then the panel follows."""
    picked, answered = t.study(), [t.action_msg, t.confirm_row]
    t.cancel.click(
        ask_cancel_handler(ctx, t), None, [t.confirm_text, t.confirm_row], inputs_kwargs=picked, **ctx.private
    )
    t.keep.click(lambda: {t.action_msg: "", t.confirm_row: gr.Row(visible=False)}, None, answered, **ctx.private)
    panel = panel_handler(ctx, t)
    for button, action in ((t.confirm, "cancel"), *zip((t.pause, t.resume, t.retry, t.raise_), ACTIONS)):
        button.click(act(ctx, t, action), None, answered, inputs_kwargs=picked, **ctx.private).then(
            panel, None, t.panel(), inputs_kwargs=picked, **ctx.quiet
        )


def panel_handler(ctx, t: StudyTab):
    """The panel's handler: the list, the picker, the open study's progress, buttons, live table and runs."""
    registry = ctx.registry
    owner_of = (lambda request, profile: None) if ctx.public is None else ctx.viewer_of

    def panel(study_id, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        owner = owner_of(request, profile)
        choices = [("every finished run (no study)", EVERY_RUN), *study_views.study_choices(registry, owner)]
        listed: dict[Any, Any] = {t.studies: study_views.studies_table(registry, owner)}
        listed[t.select] = gr.Dropdown(choices=choices, value=study_id or EVERY_RUN)
        off = {button: gr.Button(interactive=False) for button in t.buttons().values()}
        if not study_id:
            return {**listed, t.progress: "", **off, t.runs: None}
        try:
            study = registry.study(int(study_id))
        except Exception as err:
            message = f"⚠️ {visitor_message(err, 'open the study')}"
            return {**listed, t.progress: message, **off, t.table: None, t.runs: None}
        return {
            **listed,
            t.progress: study_views.study_summary(registry, study),
            **study_buttons(ctx, t, study),
            t.table: study_views.live_table(registry, study.id),
            t.runs: study_views.study_runs_table(registry, study.id),
        }

    return panel


def study_buttons(ctx, t: StudyTab, study) -> dict:
    """What the open study's state allows: each button on or off (Raise reads Lower on a raised study)."""
    status, registry = study.status, ctx.registry
    return {
        t.cancel: gr.Button(interactive=status not in ("cancelled", "cancelling", "done", "failed")),
        t.pause: gr.Button(interactive=study.state == "active" and study.progress.active > 0),
        t.resume: gr.Button(interactive=study.state == "paused"),
        t.retry: gr.Button(interactive=bool(registry.retryable_in_study(study.id))),
        t.raise_: gr.Button(
            "Back behind single runs" if study.priority > 10 else "Run it first",
            interactive=ctx.public is None and study.progress.queued > 0,
        ),
    }


def report_handler(ctx, t: StudyTab):
    """The report's handler: the open study's report (else every finished run's), its figures and four downloads."""
    registry, tasks = ctx.registry, ctx.tasks

    def build_study(chosen, task_name, study_id):
        try:
            report, files = study_views.report_files(registry, chosen or None, study_id=study_id or None)
        except (ValueError, OSError) as err:
            empty = empty_figure("Study", f"Could not build the report: {err}")
            figures = {t.layerwise: empty, t.frontier: empty, t.magnitude_score: empty}
            return {t.summary: f"⚠️ {err}", t.table: None, **figures, t.files: None, t.task: gr.Dropdown()}
        figs = study_views.report_figures(report, task_name)
        shown = task_name if task_name in report.tasks else (report.tasks[0] if report.tasks else task_name)
        return {
            t.summary: study_views.report_summary(report),
            t.table: report.table,
            t.layerwise: figs["layerwise"],
            t.frontier: figs["efficiency"],
            t.magnitude_score: figs["magnitude"],
            t.files: files,
            t.task: gr.Dropdown(choices=report.tasks or tasks, value=shown),
        }

    return build_study


def pick_handler(t: StudyTab):
    """The picker's handler: the study opened, the last message and the cancel confirmation cleared."""

    def on_pick(study_id):
        return {t.picked: int(study_id or EVERY_RUN), t.action_msg: "", t.confirm_row: gr.Row(visible=False)}

    return on_pick


def row_handler(t: StudyTab):
    """The studies table's handler: a row's study opened (as the picker does)."""

    def on_row(evt: gr.SelectData):
        row = evt.row_value or []
        try:
            study_id = int(row[0])
        except (IndexError, TypeError, ValueError):
            return gr.skip()
        return {t.picked: study_id, t.action_msg: "", t.confirm_row: gr.Row(visible=False)}

    return on_row


def on_load(request: gr.Request = None):
    """A link's ?study=N opens that study."""
    found = study_of_link(request.query_params if request else {})
    return found if found is not None else gr.skip()


def ask_cancel_handler(ctx, t: StudyTab):
    """Cancel's handler: the confirmation, saying what a cancel will do, in numbers."""
    registry = ctx.registry

    def ask_cancel(study_id):
        if not study_id:
            return {t.confirm_text: "Open a study first.", t.confirm_row: gr.Row(visible=False)}
        study = registry.study(int(study_id))
        p = study.progress
        text = (
            f"Cancel **study #{study.id}**? Its {p.queued + p.interrupted} queued runs never start and its "
            f"{p.running} running ones stop at their next step; finished runs are kept."
        )
        return {t.confirm_text: text, t.confirm_row: gr.Row(visible=True)}

    return ask_cancel


DONE = {
    "cancel": "cancelled: no queued run of it will start; running ones stop at their next step",
    "pause": "paused: its queued runs wait, no worker takes them",
    "resume": "resumed: its queued runs are back with the workers",
    "retry": "has {retried} failed runs queued again",
    "raise": "now goes first: its queued runs are taken before single runs",
    "lower": "is back behind single runs",
}


def act(ctx, t: StudyTab, action: str):
    """The handler of one study action: its message, the cancel confirmation hidden."""
    registry, who = ctx.registry, ctx.who

    def handler(study_id, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        hidden = {t.confirm_row: gr.Row(visible=False)}
        if not study_id:
            return {t.action_msg: "Open a study first.", **hidden}
        if action == "raise" and registry.study(int(study_id)).priority > 10:
            chosen = "lower"  # the button toggles: a raised study goes back behind single runs
        else:
            chosen = action
        try:
            record = study_action(registry, int(study_id), chosen, who(request, profile))
        except Exception as err:
            return {t.action_msg: f"⚠️ {visitor_message(err, chosen + ' the study')}", **hidden}
        done = DONE[chosen].format(retried=len(record.get("retried", [])) if chosen == "retry" else 0)
        return {t.action_msg: f"✅ Study #{int(study_id)} {done}.", **hidden}

    handler.__name__ = f"study_{action}"
    return handler
