"""The Runs tab: every run newest first, live (a timer while the tab is open), filtered and searched; one run's
summary, curves, config and result, Cancel, Retry and the artifact download (built when asked for).

The panel shows the run the person picked (the dropdown, a table row, a link's ?run=), kept in a per-session
RunsTabState that no refresh overwrites; with nothing picked, the running run, else the last finished one. Each
detail answer is computed from that one run id, and one computed before a newer pick is dropped (app.runs_state).
"""

import gradio as gr

from moduletune.app.figures import tables
from moduletune.app.figures.curves import MAX_SMOOTHING, SMOOTHING
from moduletune.app.files import downloads
from moduletune.app.public.actions import cancel_run, retry_run
from moduletune.app.public.errors import visitor_message
from moduletune.app.runs import listing as run_list
from moduletune.app.runs import state as runs_state
from moduletune.app.runs import tools as run_tools
from moduletune.app.runs import views

TIMER_SECONDS = 2.0  # the live table's refresh while the tab is open
# Pixels per column of the runs table: every column, age and duration included, fits a 1,280 px window.
COLUMN_WIDTHS = {"id": 40, "status": 92, "task": 50, "modules": 90, "layers": 56, "seed": 44, "lr": 56}
COLUMN_WIDTHS |= {"metric": 170, "trainable %": 80, "progress": 104, "ETA": 64, "worker/device": 120}
COLUMN_WIDTHS |= {"sweep": 96, "age": 84, "duration": 72}
# The picked run into the address bar, so a reload or a shared link opens it (read back by on_load).
RUN_URL_JS = """(run) => {
  const url = new URL(window.location.href);
  url.searchParams.set("tab", "runs");
  if (run === null || run === undefined || run === "") { url.searchParams.delete("run"); }
  else { url.searchParams.set("run", String(run)); }
  window.history.replaceState(window.history.state, "", url);
}"""


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
            runs_sweep = gr.Dropdown([views.ALL], value=views.ALL, label="Sweep", elem_id="runs-sweep", scale=1)
            runs_search = gr.Textbox(
                label="Search", placeholder="task, family, layers, status, #id, sweep", elem_id="runs-search", scale=2
            )
            runs_view = gr.Radio(
                list(views.run_list.VIEWS),
                value=views.TOP_LEVEL,
                label="Show",
                info="top level: a study's and a search's runs fold under it (click to open)",
                elem_id="runs-view",
                scale=2,
            )
            runs_refresh = gr.Button("Refresh", size="sm", elem_id="runs-refresh", scale=0, min_width=90)
            worker_md = gr.Markdown(status_line(), elem_id="worker-status")
        runs_table = gr.DataFrame(
            tables.runs_table(None),
            label="Runs (newest first; click a row: a run opens below, a study ▸ or search ▸ unfolds its runs)",
            interactive=False,
            elem_id="runs-table",
            max_height=380,
            wrap=True,
            column_widths=[f"{COLUMN_WIDTHS[c]}px" for c in tables.RUNS_TABLE_COLUMNS],
        )
        run_select = gr.Dropdown([], value=None, label="Run", elem_id="run-select", allow_custom_value=False)
        run_summary = gr.Markdown(views.NO_RUN, elem_id="run-summary")
        with gr.Row():
            cancel = gr.Button("Cancel run", variant="stop", size="sm", elem_id="cancel", interactive=False)
            retry = gr.Button("Retry run", size="sm", elem_id="retry", interactive=False)
            prepare = gr.Button("Prepare download (.zip)", size="sm", elem_id="prepare-download", visible=False)
            download = gr.DownloadButton(
                "Download artifact (.zip)", value=None, size="sm", elem_id="download", visible=False
            )
        run_action_msg = gr.Markdown("", elem_id="run-action-msg")

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
        run_tools.build(ctx, run_select, run_action_msg)  # tags and note, export, data files
        state = gr.State(runs_state.RunsTabState())
        timer = gr.Timer(TIMER_SECONDS, active=False)

    skip = gr.skip

    def show(state, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        """The panel for the picked run (else run_list.default_run), each part skipped when unchanged; all skipped
        when a newer pick arrived meanwhile (this answer is stale)."""
        version = state.version
        rows = registry.list_runs(limit=views.TABLE_LIMIT)
        run_id = state.picked if state.picked is not None else run_list.default_run(registry, rows)
        listed = views.listed_runs(registry, **state.filters)  # the picker follows the table's filters
        choices = tuple(views.run_choices(registry, include=run_id, rows=listed))
        key = views.detail_key(registry, run_id)
        d = None
        if state.moved(run_id, key):
            weight = smoothing_of.get(request.session_hash if request else None)
            d = views.run_detail(registry, run_id, viewer=viewer_of(request, profile), smoothing=weight)
        sent = state.answer(version, run_id, key, choices)
        if sent is None:
            return (skip(),) * len(show_targets)
        dropdown = skip()
        if sent.dropdown:
            dropdown = gr.Dropdown(choices=list(choices), value=run_id if run_id in {i for _, i in choices} else None)
        download = prepare_button = skip()
        if sent.download:
            label = f"Download run #{run_id} (.zip)"
            download = gr.DownloadButton(label, value=state.download_path, visible=True) if sent.ready else None
            download = download or gr.DownloadButton(value=None, visible=False)
        d = d if sent.details else None  # another answer drew this state meanwhile
        details = (skip(),) * 6
        if d is not None:
            can_cancel, can_retry = gr.Button(interactive=d.can_cancel), gr.Button(interactive=d.can_retry)
            details = (d.summary, d.curves, d.config or None, d.result, can_cancel, can_retry)
        if d is not None or sent.download:
            downloadable = d is not None and d.status == "succeeded" and bool(d.artifact_dir)
            prepare_button = gr.Button(visible=sent.ready is None and downloadable)
        return (dropdown, *details, prepare_button, download)

    show_targets = [run_select, run_summary, run_curves, run_config, run_result, cancel, retry, prepare, download]

    def refresh(status, task_filter, sweep, search, view, state):
        """The table, the worker's status, the sweep choices (when runs were added) and the last action's message."""
        state.filters = dict(status=status, task=task_filter, sweep=sweep, search=search)
        table = views.runs_table(
            registry, status, task_filter, sweep=sweep, search=search, view=view, expanded=state.expanded
        )
        count, sweeps = registry.count(), skip()
        if count != state.sweeps[0]:
            found = tuple(run_list.sweep_choices(registry))
            sweeps = gr.Dropdown(choices=[views.ALL, *found]) if found != state.sweeps[1] else skip()
            state.sweeps = (count, found)
        message = skip()
        if state.action:
            text = runs_state.action_message(registry, state.action)
            message = text if text != state.action_text else skip()
            state.action_text = text
        return (table, status_line(), sweeps, message)

    filters = [runs_status, runs_task, runs_sweep, runs_search, runs_view, state]
    refresh_targets = [runs_table, worker_md, runs_sweep, run_action_msg]
    quiet = dict(show_progress="hidden", **private)
    timer.tick(refresh, filters, refresh_targets, trigger_mode="always_last", **quiet)
    timer.tick(show, state, show_targets, trigger_mode="always_last", **quiet)
    gr.on([runs_refresh.click, tab_runs.select], refresh, filters, refresh_targets, **quiet)
    gr.on([runs_refresh.click, tab_runs.select], show, state, show_targets, **quiet)
    gr.on(
        [runs_status.change, runs_task.change, runs_sweep.change, runs_search.change, runs_view.change],
        refresh,
        filters,
        refresh_targets,
        trigger_mode="always_last",
        **quiet,
    ).then(show, state, show_targets, **quiet)

    def on_pick(state, run_id):
        state.pick(run_id)

    def on_row(state, evt: gr.SelectData):
        """A run's row picks it (and a search's unfolds its runs); a study's row (S<n>) unfolds or folds it."""
        row = evt.row_value or []
        key = str(row[0]) if row else ""
        if key.startswith("S") and key[1:].isdigit():
            state.toggle(f"study:{int(key[1:])}")
            return
        try:
            run_id = int(key)
        except ValueError:
            return  # not a run's row (an empty table)
        if str(row[3]).startswith(("▸", "▾")):
            state.toggle(f"run:{run_id}")
        state.pick(run_id)

    # A person's pick: recorded first, then the panel for it, then the address bar.
    run_select.input(on_pick, [state, run_select], None, **private).then(show, state, show_targets, **quiet).then(
        None, run_select, None, js=RUN_URL_JS
    )
    runs_table.select(on_row, state, None, **private).then(refresh, filters, refresh_targets, **quiet).then(
        show, state, show_targets, **quiet
    ).then(None, run_select, None, js=RUN_URL_JS)

    def on_load(state, request: gr.Request = None):
        """A link's ?run=12 becomes the pick (a bad value is named in the action message)."""
        run_id, problem = runs_state.run_of_link(request.query_params if request else {})
        if run_id is not None:
            state.pick(run_id)
        return problem or skip()

    loaded = ctx.demo.load(on_load, state, run_action_msg, **private)
    loaded.then(show, state, show_targets, **quiet).then(refresh, filters, refresh_targets, **quiet)

    def on_prepare(state):
        """Build the shown run's archive (once per run: app.downloads); the panel then offers the file."""
        run_id = state.shown
        try:
            run = registry.get(int(run_id))
            path = downloads.artifact_download(run) if run.status == "succeeded" else None
        except Exception as err:
            return f"⚠️ {visitor_message(err, 'prepare the download')}"
        if path is None:
            return f"⚠️ Run #{run_id} has no artifact on this server to download."
        state.prepared(run_id, path)  # ignored when another run is on screen by now
        return skip()

    prepare.click(on_prepare, state, run_action_msg, show_progress="minimal", **private).then(
        show, state, show_targets, **quiet
    )

    def acted(state, action: tuple) -> str:
        state.action = action
        state.action_text = runs_state.action_message(registry, action)
        return state.action_text

    def on_cancel(state, request: gr.Request, profile: gr.OAuthProfile | None = None):
        run_id = state.shown
        if run_id is None:
            return "Pick a run first."
        try:
            cancel_run(registry, run_id, who(request, profile))
        except Exception as err:
            state.action = ()
            return f"⚠️ {visitor_message(err, 'cancel the run')}"
        return acted(state, ("cancel", run_id))

    def on_retry(state, request: gr.Request, profile: gr.OAuthProfile | None = None):
        run_id = state.shown
        if run_id is None:
            return "Pick a run first."
        try:
            new_id = retry_run(registry, run_id, who(request, profile))
        except Exception as err:
            state.action = ()
            return f"⚠️ {visitor_message(err, 'retry the run')}"
        return acted(state, ("retry", run_id, new_id))

    for button, action in ((cancel, on_cancel), (retry, on_retry)):
        button.click(action, state, run_action_msg, **private).then(show, state, show_targets, **quiet)
    return tab_runs, timer
