"""The Gradio Blocks: the header and the tabs (app/tabs/, one module each), composed; nothing else.

build_app(registry) builds the Blocks; importing this module builds nothing and imports no Gradio.
Stable elem_ids (see ELEM_IDS) are what the browser tests touch; named API endpoints (submit,
preview, runs, run, cancel, retry, compare_data, classify) are what gradio_client calls.
build_app(registry, public=PublicLimits(...)) is the public demo (app.public.limits): models from an allow-list,
the limits shown on the page, cancel/retry on a visitor's own runs, no submitter shown to anyone.
"""

import json
from dataclasses import dataclass

from moduletune.app.experiment.form import TASK_NAMES, Form
from moduletune.app.public import visitors
from moduletune.app.public.limits import set_public
from moduletune.tasks.registry import Registry
from moduletune.tuning.config import DEFAULT_MODEL

TITLE = "moduletune"
HEADER = """# moduletune
**Which part of a transformer has to learn?** Fine-tune one module family — LayerNorms, a query
projection, a feed-forward layer — in the layers you pick, with everything else frozen, and compare it with
every earlier run. After Akbar-Tajari, Rajaee & Pilehvar, *An Empirical Study on the Transferability of
Transformer Modules in Parameter-Efficient Fine-Tuning* (EMNLP 2022)."""

CSS = """
.gradio-container { max-width: 1400px !important; }
#submit-msg, #paper-msg, #run-action-msg, #play-msg, .field-msg { min-height: 0; }
.field-msg p { color: #b42318; font-weight: 600; font-size: 0.92em; margin: 2px 0 0 0; }
#preview { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 4px 12px; }
#preview table { font-size: 0.88em; width: 100%; table-layout: auto; }
#preview td { white-space: nowrap; padding: 3px 6px; }
#preview th { white-space: normal; padding: 3px 6px; }  /* headers wrap, so the table fits a 1,280 px window */
.layer-buttons button { height: 34px; }
#worker-status p { font-size: 0.9em; color: var(--body-text-color-subdued); }
.help p { font-size: 0.9em; color: var(--body-text-color-subdued); margin: 0; }
"""

ELEM_IDS = {
    "tabs": ["tabs", "tab-experiment", "tab-runs", "tab-compare", "tab-study", "tab-weights", "tab-playground"],
    "experiment": [
        "task",
        "tasks-msg",
        "model",
        "model-msg",
        "families",
        "families-msg",
        "together",
        "random-control",
        "layers",
        "layers-all",
        "layers-none",
        "layers-k",
        "layers-first",
        "layers-last",
        "layer-spec",
        "each-layer",
        "layers-msg",
        "lr",
        "lr-msg",
        "seeds",
        "seeds-msg",
        "max-train",
        "max-train-msg",
        "max-eval",
        "max-eval-msg",
        "epochs",
        "epochs-msg",
        "batch-size",
        "batch-size-msg",
        "train-head",
        "settings-msg",
        "prefix-cache",
        "preview",
        "submit",
        "submit-msg",
        "command-box",
        "command",
        "paper-study",
        "paper-msg",
        "paper-confirm",
        "paper-cancel",
    ],
    "runs": [
        "runs-status",
        "runs-task",
        "runs-sweep",
        "runs-search",
        "runs-refresh",
        "worker-status",
        "runs-table",
        "run-select",
        "run-summary",
        "cancel",
        "retry",
        "prepare-download",
        "download",
        "run-action-msg",
        "run-curves",
        "run-config",
        "run-result",
        "run-tools",
        "run-tags",
        "run-note",
        "save-labels",
        "data-format",
        "data-runs",
        "data-events",
    ],
    "compare": [
        "compare-task",
        "compare-layers",
        "compare-tag",
        "compare-refresh",
        "chart-score",
        "chart-frontier",
        "chart-heatmap",
        "chart-lr-search",
        "compare-runs",
        "only-diff",
        "chart-curves",
        "config-diff",
        "results-table",
        "results-note",
        "results-csv",
    ],
    "study": [
        "study-tasks",
        "study-task",
        "study-go",
        "study-summary",
        "study-table",
        "chart-layerwise",
        "chart-study-frontier",
        "chart-magnitude-score",
        "study-files",
        "studies-table",
        "study-select",
        "study-refresh",
        "study-progress",
        "study-cancel",
        "study-pause",
        "study-resume",
        "study-retry",
        "study-raise",
        "study-action-msg",
        "study-runs",
    ],
    "weights": [
        "weights-model",
        "weights-kind",
        "weights-by-layer",
        "weights-go",
        "chart-magnitudes",
        "chart-magnitude-heatmap",
        "weights-runs",
        "deltas-go",
        "chart-deltas",
        "weights-msg",
    ],
    "playground": ["play-run", "play-text-a", "play-text-b", "play-go", "play-tuned", "play-base", "play-msg"],
}


def theme():
    """A quiet theme with system fonts (no web-font downloads: the app works offline)."""
    import gradio as gr

    system = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
    return gr.themes.Soft(
        primary_hue="indigo",
        secondary_hue="orange",
        font=system,
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


def submitter_of(request, profile=None, oauth: bool = False) -> str:
    """Who submits (app.public.visitors): the Hugging Face username when logged in, else a digest of the client's
    address; never the session hash, which a client chooses. LoginRequired where OAuth is required."""
    return visitors.visitor(request, profile, oauth=oauth)


# On load: open the tab the address names (?tab=runs) by clicking its button, and from then on write the tab a
# person clicks into the address (keeping ?run=), so a reload or a shared link opens the same tab. A listener on
# the tab buttons, not the tabs' select events: Gradio fires those for the wrong tab (a click on the second tab
# runs the first's and the second's, a click back on the first runs none).
TAB_URL_JS = """() => {
  const buttons = %s;
  const tabOf = Object.fromEntries(Object.entries(buttons).map(([tab, id]) => [id, tab]));
  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest('[role="tab"]');
    const tab = button && tabOf[button.id];
    if (!tab) { return; }
    const url = new URL(window.location.href);
    url.searchParams.set("tab", tab);
    window.history.replaceState(window.history.state, "", url);
  }, true);
  const linked = (new URLSearchParams(window.location.search).get("tab") || "").toLowerCase();
  const button = buttons[linked] && document.getElementById(buttons[linked]);
  if (button) { button.click(); }
}"""


def build_app(registry=None, worker_status=None, public=None):
    """The whole UI as a gr.Blocks (not launched); public=PublicLimits(...) builds the public demo.

    Public mode is process-wide (app.experiment's gate enforces it): building an app sets it on or off."""
    import gradio as gr

    from moduletune.app import api

    registry = registry or Registry()
    set_public(public, registry)
    oauth = public is not None and visitors.oauth_enabled()
    status_line = worker_status or (lambda: "worker status unknown (not started by `moduletune serve`)")

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(HEADER)
        if public is not None:
            gr.Markdown(public.summary(), elem_id="public-limits")
        if oauth:
            gr.LoginButton(elem_id="login")
        ctx = TabContext(
            registry=registry,
            public=public,
            oauth=oauth,
            who=who_of(oauth),
            viewer_of=viewer_of(public, oauth),
            model_box=model_box_of(public),
            status_line=status_line,
            tasks=list(TASK_NAMES),
            defaults=Form(),
            private=dict(api_visibility="private"),
            demo=demo,
        )
        with gr.Tabs(elem_id="tabs"):
            tabs = build_tabs(ctx)
        wire_tabs(ctx, tabs)
        api.register(ctx)
    return demo


def build_tabs(ctx) -> dict:
    """Every tab, in the order they appear, by id; each tab's build returns its components by name."""
    from moduletune.app.compare import tab as compare
    from moduletune.app.experiment import tab as experiment
    from moduletune.app.playground import tab as playground
    from moduletune.app.runs import tab as runs
    from moduletune.app.study import tab as study
    from moduletune.app.weights import tab as weights

    return {
        "experiment": experiment.build(ctx),
        "runs": runs.build(ctx),
        "compare": compare.build(ctx),
        "study": study.build(ctx),
        "weights": weights.build(ctx),
        "playground": playground.build(ctx),
    }


def wire_tabs(ctx, tabs: dict) -> None:
    """The live timers follow the open tab, and the address bar follows the tab (and opens the one it names)."""
    every_tab = [tabs["experiment"], *(t.tab for name, t in tabs.items() if name != "experiment")]
    runs_timer, study_timer = tabs["runs"].timer, tabs["study"].timer
    # The Runs and Study tabs' live timers run only while their tab is open.
    for tab in every_tab:
        tab.select(live_timers(tab.id, runs_timer, study_timer), None, [runs_timer, study_timer], **ctx.private)
    # A link's ?tab= opens that tab as a click on it does, so the tab's own select events run (the Runs timer
    # and refresh), which a gr.Tabs(selected=...) update from the load event would not trigger.
    buttons = {t.id: f"{t.elem_id}-button" for t in every_tab}
    ctx.demo.load(None, None, None, js=TAB_URL_JS % json.dumps(buttons))


def who_of(oauth: bool):
    """The submitter a request acts as (LoginRequired on an OAuth Space when nobody is logged in)."""

    def who(request, profile=None) -> str:
        return submitter_of(request, profile, oauth=oauth)

    return who


def viewer_of(public, oauth: bool):
    """The visitor whose view is redacted (public mode), or None: everyone sees everything."""
    who = who_of(oauth)

    def viewer(request, profile=None):
        if public is None:
            return None
        try:
            return who(request, profile)
        except visitors.LoginRequired:
            return "anonymous"  # browsing needs no login; nothing is theirs

    return viewer


def model_box_of(public):
    """The model input's maker: a free-text box, or in public mode a pick from the allow-list."""

    def model_box(elem_id: str, scale: int, info: str | None = None):
        import gradio as gr

        if public is None:
            return gr.Textbox(DEFAULT_MODEL, label="Model", elem_id=elem_id, scale=scale, info=info)
        models = list(public.models)
        # allow_custom_value: anything else typed (or sent through the API) reaches the gate, which refuses it
        # beside the box with the allowed list, instead of Gradio's bare "not in the list of choices".
        return gr.Dropdown(
            models,
            value=DEFAULT_MODEL if DEFAULT_MODEL in models else models[0],
            label="Model",
            elem_id=elem_id,
            scale=scale,
            allow_custom_value=True,
            info="the models of this public demo (others are refused)",
        )

    return model_box


def live_timers(tab_id: str, runs_timer, study_timer):
    """The select handler of a tab: the Runs and Study timers on while their own tab is open, off otherwise."""
    import gradio as gr

    def select():
        return {runs_timer: gr.Timer(active=tab_id == "runs"), study_timer: gr.Timer(active=tab_id == "study")}

    return select


@dataclass
class TabContext:
    """What every tab's build(ctx) shares: the registry, public mode, who is asking, and the common widgets."""

    registry: object
    public: object  # PublicLimits, or None: an open lab
    oauth: bool
    who: object  # (request, profile) -> submitter
    viewer_of: object  # (request, profile) -> the visitor whose view is redacted, or None
    model_box: object  # (elem_id, scale, info) -> the model input (a pick from the allow-list in public mode)
    status_line: object  # () -> the worker's status in words
    tasks: list
    defaults: object  # the Form's defaults
    private: dict  # event options for wiring that is no API endpoint
    demo: object

    @property
    def quiet(self) -> dict:
        """Event options of a tab's background answers: no progress shown, no API endpoint."""
        return dict(show_progress="hidden", **self.private)
