"""The Runs tab: every run newest first, live (a timer while the tab is open), one run's summary, curves,
config and result, Cancel, Retry and the artifact download."""

import gradio as gr

from moduletune.app import experiment as ex
from moduletune.app import tables, views
from moduletune.app.errors import visitor_message

TIMER_SECONDS = 2.0  # the live table's refresh while the tab is open


def build(ctx):
    """Lay out the tab and wire its events inside the Blocks being built; returns the Tab and its timer."""
    (registry, who, viewer_of, status_line, tasks, private) = (
        ctx.registry,
        ctx.who,
        ctx.viewer_of,
        ctx.status_line,
        ctx.tasks,
        ctx.private,
    )

    with gr.Tab("Runs", id="runs", elem_id="tab-runs") as tab_runs:
        with gr.Row():
            runs_status = gr.Dropdown(
                views.STATUS_CHOICES, value=views.ALL, label="Status", elem_id="runs-status", scale=1
            )
            runs_task = gr.Dropdown([views.ALL] + tasks, value=views.ALL, label="Task", elem_id="runs-task", scale=1)
            runs_refresh = gr.Button("Refresh", size="sm", elem_id="runs-refresh", scale=0, min_width=90)
            worker_md = gr.Markdown(status_line(), elem_id="worker-status")
        runs_table = gr.DataFrame(
            tables.runs_table(None),
            label="Runs (newest first; click a row)",
            interactive=False,
            elem_id="runs-table",
            max_height=380,
            wrap=True,
        )
        run_select = gr.Dropdown([], value=None, label="Run", elem_id="run-select", allow_custom_value=False)
        run_summary = gr.Markdown(views.NO_RUN, elem_id="run-summary")
        with gr.Row():
            cancel = gr.Button("Cancel run", variant="stop", size="sm", elem_id="cancel", interactive=False)
            retry = gr.Button("Retry run", size="sm", elem_id="retry", interactive=False)
            download = gr.DownloadButton(
                "Download artifact (.zip)", value=None, size="sm", elem_id="download", visible=False
            )
        run_action_msg = gr.Markdown("", elem_id="run-action-msg")
        from moduletune.app.curves import MAX_SMOOTHING, SMOOTHING

        curves_smoothing = gr.Slider(
            0,
            MAX_SMOOTHING,
            value=SMOOTHING,
            step=0.01,
            label="Loss smoothing (EMA weight; 0 = raw loss)",
            elem_id="curves-smoothing",
        )
        run_curves = gr.Plot(show_label=False, elem_id="run-curves")
        smoothing_of: dict = {}  # session -> its slider's weight, so the live refresh redraws with it too

        def resmooth(run_id, weight, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
            session = request.session_hash if request else None
            smoothing_of.pop(session, None)  # re-inserted last: the oldest sessions are the first forgotten
            smoothing_of[session] = weight
            while len(smoothing_of) > 10_000:  # one float a session, but never unbounded
                smoothing_of.pop(next(iter(smoothing_of)))
            return views.run_detail(registry, run_id, viewer_of(request, profile), smoothing=weight).curves

        curves_smoothing.change(
            resmooth,
            [run_select, curves_smoothing],
            run_curves,
            show_progress="hidden",
            trigger_mode="always_last",
            **private,
        )
        with gr.Row():
            with gr.Accordion("Config", open=False):
                run_config = gr.JSON(elem_id="run-config", show_label=False)
            with gr.Accordion("Result", open=False):
                run_result = gr.JSON(elem_id="run-result", show_label=False)
        detail_state = gr.State(())
        choices_state = gr.State(())
        timer = gr.Timer(TIMER_SECONDS, active=False)

    def detail_outputs(run_id, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        weight = smoothing_of.get(request.session_hash if request else None)
        d = views.run_detail(registry, run_id, viewer=viewer_of(request, profile), smoothing=weight)
        run = registry.get(d.run_id) if d.run_id is not None and d.status == "succeeded" else None
        path = views.artifact_download(run) if run else None
        return (
            d.summary,
            d.curves,
            d.config or None,
            d.result,
            gr.Button(interactive=d.can_cancel),
            gr.Button(interactive=d.can_retry),
            gr.DownloadButton(value=path, visible=bool(path)),
            d.key,
        )

    detail_targets = [run_summary, run_curves, run_config, run_result, cancel, retry, download, detail_state]

    def refresh_runs(
        status,
        task_filter,
        run_id,
        key,
        choices_key,
        request: gr.Request = None,
        profile: gr.OAuthProfile | None = None,
    ):
        table = views.runs_table(registry, status, task_filter)
        choices = views.run_choices(registry)
        ids = tuple(c[1] for c in choices) + tuple(c[0] for c in choices)
        if run_id in (None, "") and choices:  # nothing picked yet: follow the newest run
            run_id = choices[0][1]
            dropdown = gr.Dropdown(choices=choices, value=run_id)
        else:
            dropdown = gr.Dropdown(choices=choices) if ids != choices_key else gr.Dropdown()
        new_key = views.detail_key(registry, run_id)
        details = detail_outputs(run_id, request, profile) if new_key != key else (gr.skip(),) * len(detail_targets)
        return (table, status_line(), dropdown, ids, *details)

    runs_outputs = [runs_table, worker_md, run_select, choices_state, *detail_targets]
    timer.tick(
        refresh_runs,
        [runs_status, runs_task, run_select, detail_state, choices_state],
        runs_outputs,
        show_progress="hidden",
        trigger_mode="always_last",
        **private,
    )
    gr.on(
        [runs_refresh.click, runs_status.change, runs_task.change, tab_runs.select],
        refresh_runs,
        [runs_status, runs_task, run_select, detail_state, choices_state],
        runs_outputs,
        show_progress="hidden",
        **private,
    )

    def on_row(evt: gr.SelectData):
        row = evt.row_value or []
        try:
            return int(row[0])
        except (IndexError, TypeError, ValueError):
            return gr.skip()

    runs_table.select(on_row, None, run_select, **private)
    run_select.change(detail_outputs, run_select, detail_targets, show_progress="hidden", **private)

    def on_cancel(run_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if run_id in (None, ""):
            return "Pick a run first."
        try:
            return f"Run #{run_id}: {ex.cancel_run(registry, run_id, who(request, profile))}."
        except Exception as err:
            return f"⚠️ {visitor_message(err, 'cancel the run')}"

    def on_retry(run_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if run_id in (None, ""):
            return "Pick a run first."
        try:
            new_id = ex.retry_run(registry, run_id, who(request, profile))
        except Exception as err:
            return f"⚠️ {visitor_message(err, 'retry the run')}"
        return f"✅ Run #{run_id} queued again as run **#{new_id}**."

    cancel.click(on_cancel, run_select, run_action_msg, **private)
    retry.click(on_retry, run_select, run_action_msg, **private)
    return tab_runs, timer
