"""The Runs tab: every run newest first, live (a timer while the tab is open), filtered and searched; one run's
summary, curves, config and result, Cancel, Retry and the artifact download (built when asked for).

The panel shows the run the person picked (the dropdown, a table row, a link's ?run=), kept in a per-session
RunsTabState that no refresh overwrites; with nothing picked, the running run, else the last finished one. Each
detail answer is computed from that one run id, and one computed before a newer pick is dropped (app.runs.state).

layout(ctx) returns the components by name (RunsTab); the wire_* functions connect them, and every handler takes
its inputs by keyword and answers a dict keyed by component, so no list has to line up with another.
"""

from dataclasses import dataclass
from typing import Any

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
MAX_SESSIONS = 10_000  # smoothing weights remembered (one float a session, but never unbounded)


@dataclass
class RunsTab:
    """The Runs tab's components by name: the list (filters, table) and the panel of the picked run."""

    tab: gr.Tab
    status: gr.Dropdown
    task: gr.Dropdown
    sweep: gr.Dropdown
    search: gr.Textbox
    view: gr.Radio
    refresh: gr.Button
    worker: gr.Markdown
    table: gr.DataFrame
    run_select: gr.Dropdown
    summary: gr.Markdown
    cancel: gr.Button
    retry: gr.Button
    prepare: gr.Button
    download: gr.DownloadButton
    action_msg: gr.Markdown
    smoothing: gr.Slider
    curves: gr.Plot
    config: gr.JSON
    result: gr.JSON
    state: gr.State
    timer: gr.Timer

    def filters(self) -> dict[str, Any]:
        """The refresh handler's inputs, by its parameter names."""
        names = ("status", "task", "sweep", "search", "view", "state")
        return {name: getattr(self, name) for name in names}

    def session(self) -> dict[str, Any]:
        """The input of show and of the actions: the session's state."""
        return {"state": self.state}

    def listing(self) -> list:
        """What a refresh of the list may change."""
        return [self.table, self.worker, self.sweep, self.action_msg]

    def panel(self) -> list:
        """What showing the picked run may change."""
        return [self.run_select, self.summary, self.curves, self.config, self.result]

    def shown(self) -> list:
        """Every output of show: the panel and its buttons."""
        return [*self.panel(), self.cancel, self.retry, self.prepare, self.download]


def build(ctx) -> RunsTab:
    """Lay out the tab and wire its events inside the Blocks being built; returns its components by name."""
    tab = layout(ctx)
    smoothing_of: dict = {}  # session -> its slider's weight, so the live refresh redraws with it too
    wire_list(ctx, tab, smoothing_of)
    wire_picks(ctx, tab, smoothing_of)
    wire_actions(ctx, tab, smoothing_of)
    return tab


def layout(ctx) -> RunsTab:
    """The tab's components: the filters and the table above, the picked run's panel below."""
    with gr.Tab("Runs", id="runs", elem_id="tab-runs") as tab:
        listing = list_layout(ctx)
        panel = panel_layout(ctx)
        state = gr.State(runs_state.RunsTabState())
        timer = gr.Timer(TIMER_SECONDS, active=False)
    return RunsTab(tab=tab, **listing, **panel, state=state, timer=timer)


def list_layout(ctx) -> dict[str, Any]:
    """The filters row and the runs table."""
    with gr.Row():
        status = gr.Dropdown(views.STATUS_CHOICES, value=views.ALL, label="Status", elem_id="runs-status", scale=1)
        task = gr.Dropdown([views.ALL] + ctx.tasks, value=views.ALL, label="Task", elem_id="runs-task", scale=1)
        sweep = gr.Dropdown([views.ALL], value=views.ALL, label="Sweep", elem_id="runs-sweep", scale=1)
        search = gr.Textbox(
            label="Search", placeholder="task, family, layers, status, #id, sweep", elem_id="runs-search", scale=2
        )
        view = gr.Radio(
            list(views.run_list.VIEWS),
            value=views.TOP_LEVEL,
            label="Show",
            info="top level: a study's and a search's runs fold under it (click to open)",
            elem_id="runs-view",
            scale=2,
        )
        refresh = gr.Button("Refresh", size="sm", elem_id="runs-refresh", scale=0, min_width=90)
        worker = gr.Markdown(ctx.status_line(), elem_id="worker-status")
    table = gr.DataFrame(
        tables.runs_table(None),
        label="Runs (newest first; click a row: a run opens below, a study ▸ or search ▸ unfolds its runs)",
        interactive=False,
        elem_id="runs-table",
        max_height=380,
        wrap=True,
        column_widths=[f"{COLUMN_WIDTHS[c]}px" for c in tables.RUNS_TABLE_COLUMNS],
    )
    return dict(
        status=status, task=task, sweep=sweep, search=search, view=view, refresh=refresh, worker=worker, table=table
    )


def panel_layout(ctx) -> dict[str, Any]:
    """The picked run: picker, summary, buttons, curves, config and result, and the tools accordion."""
    run_select = gr.Dropdown([], value=None, label="Run", elem_id="run-select", allow_custom_value=False)
    summary = gr.Markdown(views.NO_RUN, elem_id="run-summary")
    with gr.Row():
        cancel = gr.Button("Cancel run", variant="stop", size="sm", elem_id="cancel", interactive=False)
        retry = gr.Button("Retry run", size="sm", elem_id="retry", interactive=False)
        prepare = gr.Button("Prepare download (.zip)", size="sm", elem_id="prepare-download", visible=False)
        download = gr.DownloadButton(
            "Download artifact (.zip)", value=None, size="sm", elem_id="download", visible=False
        )
    action_msg = gr.Markdown("", elem_id="run-action-msg")
    smoothing = gr.Slider(
        0,
        MAX_SMOOTHING,
        value=SMOOTHING,
        step=0.01,
        label="Loss smoothing (EMA weight; 0 = raw loss)",
        elem_id="curves-smoothing",
    )
    curves = gr.Plot(show_label=False, elem_id="run-curves")
    with gr.Row():
        with gr.Accordion("Config", open=False):
            config = gr.JSON(elem_id="run-config", show_label=False)
        with gr.Accordion("Result", open=False):
            result = gr.JSON(elem_id="run-result", show_label=False)
    run_tools.build(ctx, run_select, action_msg)  # tags and note, export, data files
    return dict(
        run_select=run_select,
        summary=summary,
        cancel=cancel,
        retry=retry,
        prepare=prepare,
        download=download,
        action_msg=action_msg,
        smoothing=smoothing,
        curves=curves,
        config=config,
        result=result,
    )


def wire_list(ctx, t: RunsTab, smoothing_of: dict) -> None:
    """The live list: the timer, Refresh and the tab opening redraw the table and the panel; a filter redraws both."""
    show, refresh = show_handler(ctx, t, smoothing_of), refresh_handler(ctx, t)
    shown, filters, listing = t.shown(), t.filters(), t.listing()
    t.smoothing.change(
        resmooth_handler(ctx, smoothing_of),
        None,
        t.curves,
        inputs_kwargs=dict(run_id=t.run_select, weight=t.smoothing),
        show_progress="hidden",
        trigger_mode="always_last",
        **ctx.private,
    )
    t.timer.tick(refresh, None, listing, inputs_kwargs=filters, trigger_mode="always_last", **ctx.quiet)
    t.timer.tick(show, None, shown, inputs_kwargs=t.session(), trigger_mode="always_last", **ctx.quiet)
    gr.on([t.refresh.click, t.tab.select], refresh, None, listing, inputs_kwargs=filters, **ctx.quiet)
    gr.on([t.refresh.click, t.tab.select], show, None, shown, inputs_kwargs=t.session(), **ctx.quiet)
    gr.on(
        [t.status.change, t.task.change, t.sweep.change, t.search.change, t.view.change],
        refresh,
        None,
        listing,
        inputs_kwargs=filters,
        trigger_mode="always_last",
        **ctx.quiet,
    ).then(show, None, shown, inputs_kwargs=t.session(), **ctx.quiet)


def wire_picks(ctx, t: RunsTab, smoothing_of: dict) -> None:
    """A person's pick (the dropdown, a row, a link's ?run=): recorded first, then the panel, then the address bar."""
    show, refresh = show_handler(ctx, t, smoothing_of), refresh_handler(ctx, t)
    state, shown = t.session(), t.shown()
    t.run_select.input(on_pick, None, None, inputs_kwargs=dict(state=t.state, run_id=t.run_select), **ctx.private).then(
        show, None, shown, inputs_kwargs=state, **ctx.quiet
    ).then(None, t.run_select, None, js=RUN_URL_JS)
    t.table.select(on_row, None, None, inputs_kwargs=state, **ctx.private).then(
        refresh, None, t.listing(), inputs_kwargs=t.filters(), **ctx.quiet
    ).then(show, None, shown, inputs_kwargs=state, **ctx.quiet).then(None, t.run_select, None, js=RUN_URL_JS)
    loaded = ctx.demo.load(on_load, None, t.action_msg, inputs_kwargs=state, **ctx.private)
    loaded.then(show, None, shown, inputs_kwargs=state, **ctx.quiet).then(
        refresh, None, t.listing(), inputs_kwargs=t.filters(), **ctx.quiet
    )


def wire_actions(ctx, t: RunsTab, smoothing_of: dict) -> None:
    """Prepare download, Cancel and Retry act on the shown run; the panel then follows."""
    show = show_handler(ctx, t, smoothing_of)
    state, shown = t.session(), t.shown()
    t.prepare.click(
        prepare_handler(ctx), None, t.action_msg, inputs_kwargs=state, show_progress="minimal", **ctx.private
    ).then(show, None, shown, inputs_kwargs=state, **ctx.quiet)
    for button, handler in ((t.cancel, cancel_handler(ctx)), (t.retry, retry_handler(ctx))):
        button.click(handler, None, t.action_msg, inputs_kwargs=state, **ctx.private).then(
            show, None, shown, inputs_kwargs=state, **ctx.quiet
        )


def resmooth_handler(ctx, smoothing_of: dict):
    """The slider's handler: the curves redrawn with its weight, remembered for the session's live refresh."""
    registry, viewer_of = ctx.registry, ctx.viewer_of

    def resmooth(run_id, weight, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        session = request.session_hash if request else None
        smoothing_of.pop(session, None)  # re-inserted last: the oldest sessions are the first forgotten
        smoothing_of[session] = weight
        while len(smoothing_of) > MAX_SESSIONS:
            smoothing_of.pop(next(iter(smoothing_of)))
        return views.run_detail(registry, run_id, viewer_of(request, profile), smoothing=weight).curves

    return resmooth


def show_handler(ctx, t: RunsTab, smoothing_of: dict):
    """The panel's handler: the picked run (else run_list.default_run), each part skipped when unchanged; all
    skipped when a newer pick arrived meanwhile (this answer is stale)."""
    registry, viewer_of = ctx.registry, ctx.viewer_of

    def show(state, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
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
            return gr.skip()
        d = d if sent.details else None  # another answer drew this state meanwhile
        answer = {**picker_update(t, sent, run_id, choices), **details_update(t, d)}
        return {**answer, **download_update(t, sent, state, run_id, d)} or gr.skip()

    return show


def picker_update(t: RunsTab, sent, run_id, choices: tuple) -> dict:
    """The run picker's choices and value, when they changed."""
    if not sent.dropdown:
        return {}
    value = run_id if run_id in {i for _, i in choices} else None
    return {t.run_select: gr.Dropdown(choices=list(choices), value=value)}


def details_update(t: RunsTab, d) -> dict:
    """The run's summary, curves, config, result and what its buttons allow (nothing when not redrawn)."""
    if d is None:
        return {}
    return {
        t.summary: d.summary,
        t.curves: d.curves,
        t.config: d.config or None,
        t.result: d.result,
        t.cancel: gr.Button(interactive=d.can_cancel),
        t.retry: gr.Button(interactive=d.can_retry),
    }


def download_update(t: RunsTab, sent, state, run_id, d) -> dict:
    """Prepare download offered for a succeeded run with an artifact; the file once it is built."""
    answer = {}
    if sent.download:
        label = f"Download run #{run_id} (.zip)"
        download = gr.DownloadButton(label, value=state.download_path, visible=True) if sent.ready else None
        answer[t.download] = download or gr.DownloadButton(value=None, visible=False)
    if d is not None or sent.download:
        downloadable = d is not None and d.status == "succeeded" and bool(d.artifact_dir)
        answer[t.prepare] = gr.Button(visible=sent.ready is None and downloadable)
    return answer


def refresh_handler(ctx, t: RunsTab):
    """The list's handler: the table, the worker's status, the sweep choices (when runs were added) and the last
    action's message."""
    registry, status_line = ctx.registry, ctx.status_line

    def refresh(status, task, sweep, search, view, state):
        state.filters = dict(status=status, task=task, sweep=sweep, search=search)
        table = views.runs_table(registry, status, task, sweep=sweep, search=search, view=view, expanded=state.expanded)
        answer = {t.table: table, t.worker: status_line()}
        count = registry.count()
        if count != state.sweeps[0]:
            found = tuple(run_list.sweep_choices(registry))
            if found != state.sweeps[1]:
                answer[t.sweep] = gr.Dropdown(choices=[views.ALL, *found])
            state.sweeps = (count, found)
        if state.action:
            text = runs_state.action_message(registry, state.action)
            if text != state.action_text:
                answer[t.action_msg] = text
            state.action_text = text
        return answer

    return refresh


def on_pick(state, run_id):
    """The dropdown's pick, recorded in the session's state."""
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


def on_load(state, request: gr.Request = None):
    """A link's ?run=12 becomes the pick (a bad value is named in the action message)."""
    run_id, problem = runs_state.run_of_link(request.query_params if request else {})
    if run_id is not None:
        state.pick(run_id)
    return problem or gr.skip()


def prepare_handler(ctx):
    """Prepare download's handler: build the shown run's archive (once per run: app.files.downloads); the panel then
    offers the file."""
    registry = ctx.registry

    def on_prepare(state):
        run_id = state.shown
        try:
            run = registry.get(int(run_id))
            path = downloads.artifact_download(run) if run.status == "succeeded" else None
        except Exception as err:
            return f"⚠️ {visitor_message(err, 'prepare the download')}"
        if path is None:
            return f"⚠️ Run #{run_id} has no artifact on this server to download."
        state.prepared(run_id, path)  # ignored when another run is on screen by now
        return gr.skip()

    return on_prepare


def acted(registry, state, action: tuple) -> str:
    """Remember the action so the live refresh keeps its message current; the message now."""
    state.action = action
    state.action_text = runs_state.action_message(registry, action)
    return state.action_text


def cancel_handler(ctx):
    """Cancel's handler: the shown run cancelled, as the person asking may."""
    registry, who = ctx.registry, ctx.who

    def on_cancel(state, request: gr.Request, profile: gr.OAuthProfile | None = None):
        run_id = state.shown
        if run_id is None:
            return "Pick a run first."
        try:
            cancel_run(registry, run_id, who(request, profile))
        except Exception as err:
            state.action = ()
            return f"⚠️ {visitor_message(err, 'cancel the run')}"
        return acted(registry, state, ("cancel", run_id))

    return on_cancel


def retry_handler(ctx):
    """Retry's handler: the shown run queued again as a new run, as the person asking may."""
    registry, who = ctx.registry, ctx.who

    def on_retry(state, request: gr.Request, profile: gr.OAuthProfile | None = None):
        run_id = state.shown
        if run_id is None:
            return "Pick a run first."
        try:
            new_id = retry_run(registry, run_id, who(request, profile))
        except Exception as err:
            state.action = ()
            return f"⚠️ {visitor_message(err, 'retry the run')}"
        return acted(registry, state, ("retry", run_id, new_id))

    return on_retry
