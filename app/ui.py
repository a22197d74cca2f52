"""The Gradio Blocks: five tabs and their wiring, nothing else (logic lives in app.experiment and app.views).

build_app(registry) builds the Blocks; importing this module builds nothing and imports no Gradio.
Stable elem_ids (see ELEM_IDS) are what the browser tests touch; named API endpoints (submit,
preview, runs, run, cancel, retry, compare_data, predict) are what gradio_client calls.
build_app(registry, public=PublicLimits(...)) is the public demo (app.public): models from an allow-list,
the limits shown on the page, cancel/retry on a visitor's own runs, no submitter shown to anyone.
"""
import functools

from app import experiment as ex
from app import views
from app import visitors
from app.errors import visitor_message

TITLE = "moduletune"
HEADER = """# moduletune
**Which part of a transformer has to learn?** Fine-tune one module family — LayerNorms, a query
projection, a feed-forward layer — in the layers you pick, with everything else frozen, and compare it with
every earlier run. After Akbar-Tajari, Rajaee & Pilehvar, *An Empirical Study on the Transferability of
Transformer Modules in Parameter-Efficient Fine-Tuning* (EMNLP 2022)."""

CSS = """
.gradio-container { max-width: 1400px !important; }
#submit-msg, #layers-msg, #model-msg, #paper-msg, #run-action-msg, #play-msg { min-height: 0; }
#layers-msg p, #model-msg p { color: #b42318; font-weight: 600; }
#preview { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 4px 12px; }
#preview table { font-size: 0.92em; width: auto; }
#preview th, #preview td { white-space: nowrap; padding: 4px 8px; }
.layer-buttons button { height: 34px; }
#worker-status p { font-size: 0.9em; color: var(--body-text-color-subdued); }
.help p { font-size: 0.9em; color: var(--body-text-color-subdued); margin: 0; }
"""

ELEM_IDS = {
    "tabs": ["tabs", "tab-experiment", "tab-runs", "tab-compare", "tab-study", "tab-weights", "tab-playground"],
    "experiment": ["task", "model", "model-msg", "families", "together", "random-control", "layers", "layers-all",
                   "layers-none", "layers-k", "layers-first", "layers-last", "layer-spec", "each-layer",
                   "layers-msg", "lr", "seeds", "max-train", "max-eval", "epochs", "batch-size", "train-head",
                   "prefix-cache", "preview", "submit", "submit-msg", "paper-study", "paper-msg", "paper-confirm",
                   "paper-cancel"],
    "runs": ["runs-status", "runs-task", "runs-refresh", "worker-status", "runs-table", "run-select",
             "run-summary", "cancel", "retry", "download", "run-action-msg", "run-curves", "run-config",
             "run-result"],
    "compare": ["compare-task", "compare-layers", "compare-refresh", "chart-score", "chart-frontier",
                "chart-heatmap", "chart-lr-search", "compare-runs", "only-diff", "chart-curves", "config-diff", "results-table",
                "results-note", "results-csv"],
    "study": ["study-tasks", "study-task", "study-go", "study-summary", "study-table", "chart-layerwise",
              "chart-study-frontier", "chart-magnitude-score", "study-files"],
    "weights": ["weights-model", "weights-kind", "weights-by-layer", "weights-go", "chart-magnitudes",
                "chart-magnitude-heatmap", "weights-runs", "deltas-go", "chart-deltas", "weights-msg"],
    "playground": ["play-run", "play-text-a", "play-text-b", "play-go", "play-tuned", "play-base", "play-msg"],
}
TIMER_SECONDS = 2.0
FORM_FIELDS = ("tasks", "model", "families", "together", "random_control", "layers", "layer_spec", "each_layer",
               "lr", "seeds", "max_train", "max_eval", "epochs", "batch_size", "train_head", "prefix_cache",
               "lr_search")
# Every value the form sends, by name: the main controls, then the Advanced settings made from their Knobs.
FORM_PARAMS = FORM_FIELDS + ex.ADVANCED


def form_of(values: dict) -> "ex.Form":
    """The Form for a mapping of form parameter names to values."""
    main = {name: values[name] for name in FORM_FIELDS if name in values}
    return ex.Form(**main, advanced={name: values[name] for name in ex.ADVANCED if name in values})


def form_handler(body, before: tuple[str, ...] = (), identity: bool = False):
    """A Gradio handler over the whole form: one named parameter per form value (what the API and
    gradio_client see), and body(*before_values, form[, request, profile]) receiving one Form.

    With identity, Gradio fills in the request and the OAuth profile (by their annotations) after the form."""
    import inspect

    import gradio as gr

    names = (*before, *FORM_PARAMS)

    def handler(*args):
        values = dict(zip(names, args))
        rest = args[len(names):]
        return body(*(values[n] for n in before), form_of(values), *rest)

    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in names]
    handler.__annotations__ = {}
    if identity:
        params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
                   for n in ("request", "profile")]
        handler.__annotations__ = {"request": gr.Request, "profile": gr.OAuthProfile | None}
    handler.__signature__ = inspect.Signature(params)
    handler.__name__ = handler.__qualname__ = body.__name__
    handler.__doc__ = body.__doc__
    return handler


def knob_input(name: str):
    """The form input for one Advanced setting, made from its Knob: label, help, bounds, choices, default."""
    import gradio as gr

    from tuning.config import KNOBS, RunConfig

    k = KNOBS[name]
    default = RunConfig.__dataclass_fields__[name].default
    label = (k.label or name.replace("_", " ")).capitalize()
    common = dict(label=label, info=k.help, elem_id="adv-" + name.replace("_", "-"))
    if k.kind == "int":
        return gr.Number(default, precision=0, minimum=k.bounds[0], maximum=k.bounds[1], **common)
    if k.kind == "number":
        return gr.Number(default, **common)
    if k.kind == "choice":
        return gr.Dropdown(list(k.choices), value=default, **common)
    if k.kind == "bool":
        return gr.Checkbox(default, **common)
    return gr.Textbox("" if default is None else str(default), placeholder="default" if default is None else None,
                      **common)


def theme():
    """A quiet theme with system fonts (no web-font downloads: the app works offline)."""
    import gradio as gr

    system = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="orange", font=system,
                          font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"])


def submitter_of(request, profile=None, oauth: bool = False) -> str:
    """Who submits (app.visitors): the Hugging Face username when logged in, else a digest of the client's
    address; never the session hash, which a client chooses. LoginRequired where OAuth is required."""
    return visitors.visitor(request, profile, oauth=oauth)


def build_app(registry=None, worker_status=None, public=None):
    """The whole UI as a gr.Blocks (not launched); public=PublicLimits(...) builds the public demo.

    Public mode is process-wide (app.experiment's gate enforces it): building an app sets it on or off."""
    import gradio as gr

    from app import charts
    from tasks.registry import Registry
    from tuning.config import DEFAULT_MODEL

    registry = registry or Registry()
    ex.set_public(public, registry)
    oauth = public is not None and visitors.oauth_enabled()

    def who(request, profile=None) -> str:
        """The submitter this request acts as (LoginRequired on an OAuth Space when nobody is logged in)."""
        return submitter_of(request, profile, oauth=oauth)

    def viewer_of(request, profile=None):
        """The visitor whose view is redacted (public mode), or None: everyone sees everything."""
        if public is None:
            return None
        try:
            return who(request, profile)
        except visitors.LoginRequired:
            return "anonymous"  # browsing needs no login; nothing is theirs

    def model_box(elem_id: str, scale: int, info: str | None = None):
        """A free-text model box, or in public mode a pick from the allow-list (anything else is refused)."""
        if public is None:
            return gr.Textbox(DEFAULT_MODEL, label="Model", elem_id=elem_id, scale=scale, info=info)
        models = list(public.models)
        # allow_custom_value: anything else typed (or sent through the API) reaches the gate, which refuses it
        # beside the box with the allowed list, instead of Gradio's bare "not in the list of choices".
        return gr.Dropdown(models, value=DEFAULT_MODEL if DEFAULT_MODEL in models else models[0], label="Model",
                           elem_id=elem_id, scale=scale, allow_custom_value=True,
                           info="the models of this public demo (others are refused)")
    status_line = worker_status or (lambda: "worker status unknown (not started by `moduletune serve`)")
    tasks = list(ex.TASK_NAMES)
    defaults = ex.Form()
    private = dict(api_visibility="private")

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(HEADER)
        if public is not None:
            gr.Markdown(public.summary(), elem_id="public-limits")
        if oauth:
            gr.LoginButton(elem_id="login")
        with gr.Tabs(elem_id="tabs"):
            # ------------------------------------------------------------------ Experiment
            with gr.Tab("Experiment", id="experiment", elem_id="tab-experiment") as tab_experiment:
                with gr.Row(equal_height=False):
                    with gr.Column(scale=7):
                        with gr.Row():
                            task = gr.Dropdown(tasks, value=list(defaults.tasks), multiselect=True,
                                               label="GLUE task(s)", info="one run per task", elem_id="task", scale=1)
                            model = model_box("model", 2, "the embedded all-MiniLM-L6-v2, a Hub id "
                                                          "(bert-base-uncased) or a local path; press Enter to load "
                                                          "its layers")
                        model_msg = gr.Markdown("", elem_id="model-msg")
                        families = gr.CheckboxGroup(ex.FAMILY_CHOICES, value=list(defaults.families),
                                                    label="Module families", elem_id="families",
                                                    info="each family is a separate run, everything else frozen")
                        with gr.Row():
                            together = gr.Checkbox(False, label="train the chosen families together in one run",
                                                   elem_id="together")
                            random_control = gr.Checkbox(False, label="add a random control of the same size "
                                                                      "(random:<family>)", elem_id="random-control")
                        with gr.Column(variant="panel"):
                            layers = gr.CheckboxGroup(ex.layer_toggle_choices(6), value=list(defaults.layers),
                                                      label="Layers", elem_id="layers",
                                                      info="all-MiniLM-L6-v2: 6 layers (0-5); the families are "
                                                           "trained in the layers that are on")
                            with gr.Row(equal_height=False, elem_classes="layer-buttons"):
                                layers_all = gr.Button("all", size="sm", elem_id="layers-all", min_width=60, scale=0)
                                layers_none = gr.Button("none", size="sm", elem_id="layers-none", min_width=60,
                                                        scale=0)
                                layers_first = gr.Button("first k", size="sm", elem_id="layers-first", min_width=80,
                                                         scale=0)
                                layers_last = gr.Button("last k", size="sm", elem_id="layers-last", min_width=80,
                                                        scale=0)
                                layers_k = gr.Number(2, show_label=False, container=False, precision=0, minimum=1,
                                                     elem_id="layers-k", min_width=70, scale=0, placeholder="k")
                            with gr.Row(equal_height=True):
                                layer_spec = gr.Textbox("", label="…or type a layer spec (overrides the toggles)",
                                                        placeholder="e.g. 0-2,5 · last:2 · all · each",
                                                        elem_id="layer-spec", scale=3)
                                each_layer = gr.Checkbox(False, label="each layer separately (one run per layer)",
                                                         elem_id="each-layer", scale=2)
                        layers_msg = gr.Markdown("", elem_id="layers-msg")
                        with gr.Row():
                            lr = gr.Number(ex.lr_default(defaults.families), label="Learning rate", elem_id="lr",
                                           info=ex.lr_hint(defaults.families))
                            seeds = gr.Textbox(defaults.seeds, label="Seeds", elem_id="seeds",
                                               info="comma-separated: one run per seed")
                        lr_search = gr.Checkbox(defaults.lr_search, elem_id="lr-search",
                                                label="search the learning rate first (a fair lr per family: "
                                                      "successive halving on a held-out 10% of the training rows, "
                                                      "about 1.5× one run; the typed lr is then ignored)")
                        with gr.Row():
                            max_train = gr.Number(defaults.max_train, label="Training examples", precision=0,
                                                  minimum=0, elem_id="max-train",
                                                  info="a seeded, stratified sample; 0 = the whole training set")
                            # 0 is the whole set; the public demo caps it, and its cap covers SST-2's 872.
                            max_eval = gr.Number(defaults.max_eval or (public.max_eval if public else 0),
                                                 label="Evaluation examples", precision=0,
                                                 minimum=0, elem_id="max-eval", info="0 = the whole validation set")
                        with gr.Accordion("More settings", open=False):
                            with gr.Row():
                                epochs = gr.Number(defaults.epochs, label="Epochs", precision=0, minimum=1,
                                                   elem_id="epochs")
                                batch_size = gr.Number(defaults.batch_size, label="Batch size", precision=0,
                                                       minimum=1, elem_id="batch-size")
                                train_head = gr.Checkbox(True, label="train the classifier head too",
                                                         elem_id="train-head")
                            prefix_cache = gr.Radio(
                                ["auto", "on", "off"], value=defaults.prefix_cache, label="Frozen-prefix cache",
                                elem_id="prefix-cache",
                                info="on: the frozen layers below the lowest trainable one run once, without "
                                     "dropout, and are reused across epochs and runs (a layer-wise sweep pays for "
                                     "them once); auto: only where that changes nothing; off: never")
                            gr.Markdown("**Advanced settings** (blank = the default; `moduletune run --help` says "
                                        "the same)", elem_classes="help")
                            advanced = [knob_input(name) for name in ex.ADVANCED]
                    with gr.Column(scale=6):
                        preview = gr.Markdown("Counting parameters…", elem_id="preview")
                        submit = gr.Button("Queue runs", variant="primary", elem_id="submit")
                        submit_msg = gr.Markdown("", elem_id="submit-msg")
                        queued_ids = gr.JSON(visible=False)
                        with gr.Group():
                            gr.Markdown("**Preset: the paper's study.** Every module family (Q K V AO FI FO LN; bias "
                                        "too when ticked above, random controls when asked) on all layers and on "
                                        "each layer separately, plus full fine-tuning, on the chosen tasks, seeds "
                                        "and subsampling; each setting searches its own learning rate first.",
                                        elem_classes="help", padding=True)
                            paper = gr.Button("Queue the paper's study…", elem_id="paper-study")
                            paper_msg = gr.Markdown("", elem_id="paper-msg")
                            with gr.Row():
                                paper_confirm = gr.Button("Yes, queue them", variant="primary", visible=False,
                                                          elem_id="paper-confirm")
                                paper_cancel = gr.Button("Cancel", visible=False, elem_id="paper-cancel")
                            paper_open = gr.State(False)

            # ------------------------------------------------------------------ Runs
            with gr.Tab("Runs", id="runs", elem_id="tab-runs") as tab_runs:
                with gr.Row():
                    runs_status = gr.Dropdown(views.STATUS_CHOICES, value=views.ALL, label="Status",
                                              elem_id="runs-status", scale=1)
                    runs_task = gr.Dropdown([views.ALL] + tasks, value=views.ALL, label="Task", elem_id="runs-task",
                                            scale=1)
                    runs_refresh = gr.Button("Refresh", size="sm", elem_id="runs-refresh", scale=0, min_width=90)
                    worker_md = gr.Markdown(status_line(), elem_id="worker-status")
                runs_table = gr.DataFrame(charts.runs_table(None), label="Runs (newest first; click a row)",
                                          interactive=False, elem_id="runs-table", max_height=380, wrap=True)
                run_select = gr.Dropdown([], value=None, label="Run", elem_id="run-select", allow_custom_value=False)
                run_summary = gr.Markdown(views.NO_RUN, elem_id="run-summary")
                with gr.Row():
                    cancel = gr.Button("Cancel run", variant="stop", size="sm", elem_id="cancel", interactive=False)
                    retry = gr.Button("Retry run", size="sm", elem_id="retry", interactive=False)
                    download = gr.DownloadButton("Download artifact (.zip)", value=None, size="sm",
                                                 elem_id="download", visible=False)
                run_action_msg = gr.Markdown("", elem_id="run-action-msg")
                run_curves = gr.Plot(show_label=False, elem_id="run-curves")
                with gr.Row():
                    with gr.Accordion("Config", open=False):
                        run_config = gr.JSON(elem_id="run-config", show_label=False)
                    with gr.Accordion("Result", open=False):
                        run_result = gr.JSON(elem_id="run-result", show_label=False)
                detail_state = gr.State(())
                choices_state = gr.State(())
                timer = gr.Timer(TIMER_SECONDS, active=False)

            # ------------------------------------------------------------------ Compare
            with gr.Tab("Compare", id="compare", elem_id="tab-compare") as tab_compare:
                with gr.Row():
                    compare_task = gr.Dropdown(tasks, value=ex.DEFAULT_TASKS[0], label="Task", elem_id="compare-task", scale=1)
                    compare_layers = gr.Dropdown([views.ALL], value=views.ALL, label="Layer choice (results table)",
                                                 elem_id="compare-layers", allow_custom_value=True, scale=1)
                    compare_refresh = gr.Button("Refresh", size="sm", elem_id="compare-refresh", scale=0,
                                                min_width=90)
                with gr.Row():
                    chart_score = gr.Plot(show_label=False, elem_id="chart-score")
                    chart_frontier = gr.Plot(show_label=False, elem_id="chart-frontier")
                with gr.Row():
                    chart_heatmap = gr.Plot(show_label=False, elem_id="chart-heatmap")
                    chart_lr = gr.Plot(show_label=False, elem_id="chart-lr-search")
                gr.Markdown("### Selected runs", elem_classes="help")
                with gr.Row():
                    compare_runs = gr.Dropdown([], value=[], multiselect=True, label="Runs to overlay (default: the "
                                               "task's latest five)", elem_id="compare-runs", scale=4)
                    only_diff = gr.Checkbox(True, label="config: only differences", elem_id="only-diff", scale=1)
                chart_curves = gr.Plot(show_label=False, elem_id="chart-curves")
                config_diff = gr.DataFrame(label="Config of the selected runs", interactive=False,
                                           elem_id="config-diff", wrap=True)
                gr.Markdown("### Results table: module families × tasks (mean ± std over seeds (n), trainable %)",
                            elem_classes="help")
                results_table = gr.DataFrame(label="Results", interactive=False, elem_id="results-table", wrap=True)
                results_note = gr.Markdown("", elem_id="results-note", elem_classes="help")
                results_csv = gr.DownloadButton("Download CSV", size="sm", elem_id="results-csv")

            # ------------------------------------------------------------------ Study
            with gr.Tab("Study", id="study", elem_id="tab-study") as tab_study:
                gr.Markdown("The paper's findings regenerated from every finished run: the table of module families "
                            "× tasks (mean ± std over seeds, n; chance and full fine-tuning rows), the layer-wise "
                            "analysis, score against trainable share, and the paper's explanation put to the test — "
                            "each family's mean |w| against its score (Spearman's ρ).", elem_classes="help")
                with gr.Row():
                    study_tasks = gr.Dropdown(tasks, value=[], multiselect=True, elem_id="study-tasks", scale=3,
                                              label="Tasks in the report (empty: every task with runs)")
                    study_task = gr.Dropdown(tasks, value=ex.DEFAULT_TASKS[0], label="Figures for task",
                                             elem_id="study-task", scale=1)
                    study_go = gr.Button("Build the report", variant="primary", elem_id="study-go", scale=1)
                study_summary = gr.Markdown("Press **Build the report** (the first one computes the model's weight "
                                            "magnitudes, a few seconds).", elem_id="study-summary")
                study_table = gr.DataFrame(label="Study table", interactive=False, elem_id="study-table", wrap=True)
                with gr.Row():
                    chart_layerwise = gr.Plot(show_label=False, elem_id="chart-layerwise")
                    chart_study_frontier = gr.Plot(show_label=False, elem_id="chart-study-frontier")
                chart_mag_score = gr.Plot(show_label=False, elem_id="chart-magnitude-score")
                study_files = gr.File(label="Download: CSV, Markdown, LaTeX, self-contained HTML", file_count="multiple",
                                      elem_id="study-files", interactive=False)

            # ------------------------------------------------------------------ Weights
            with gr.Tab("Weights", id="weights", elem_id="tab-weights") as tab_weights:
                gr.Markdown("How large are the pre-trained weights of each module? The paper ties LayerNorm's "
                            "transferability to its far larger magnitudes.", elem_classes="help")
                with gr.Row():
                    weights_model = model_box("weights-model", 3)
                    weights_kind = gr.Radio(["weight", "bias"], value="weight", label="Tensors", elem_id="weights-kind",
                                            scale=1)
                    weights_by_layer = gr.Checkbox(False, label="boxes per layer", elem_id="weights-by-layer", scale=1)
                    weights_go = gr.Button("Show magnitudes", variant="primary", elem_id="weights-go", scale=1)
                weights_msg = gr.Markdown("", elem_id="weights-msg")
                chart_magnitudes = gr.Plot(show_label=False, elem_id="chart-magnitudes")
                chart_mag_heatmap = gr.Plot(show_label=False, elem_id="chart-magnitude-heatmap")
                gr.Markdown("### How far did tuning move each module? ‖Δw‖/‖w‖ by layer", elem_classes="help")
                with gr.Row():
                    weights_runs = gr.Dropdown([], value=[], multiselect=True, label="Succeeded runs",
                                               elem_id="weights-runs", scale=4)
                    deltas_go = gr.Button("Show deltas", elem_id="deltas-go", scale=1)
                chart_deltas = gr.Plot(charts.empty_figure(views.DELTAS_TITLE, views.NO_DELTAS), show_label=False,
                                       elem_id="chart-deltas")
                weights_state = gr.State(None)

            # ------------------------------------------------------------------ Playground
            with gr.Tab("Playground", id="playground", elem_id="tab-playground") as tab_play:
                gr.Markdown("Pick a finished run and type a sentence (or a pair): the tuned model's prediction "
                            "next to the untuned base model's (the same encoder with a fresh, untrained head).",
                            elem_classes="help")
                play_run = gr.Dropdown([], value=None, label="Finished run", elem_id="play-run")
                with gr.Row():
                    play_a = gr.Textbox("", label="Sentence", lines=2, elem_id="play-text-a",
                                        placeholder="A man is playing a guitar.")
                    play_b = gr.Textbox("", label="Second sentence", lines=2, elem_id="play-text-b",
                                        placeholder="A person plays an instrument.", visible=False)
                play_go = gr.Button("Predict", variant="primary", elem_id="play-go")
                play_msg = gr.Markdown("", elem_id="play-msg")
                with gr.Row():
                    play_tuned = gr.Label(label="Tuned run", elem_id="play-tuned", num_top_classes=3)
                    play_base = gr.Label(label="Untuned base model", elem_id="play-base", num_top_classes=3)

        form_inputs = [task, model, families, together, random_control, layers, layer_spec, each_layer, lr, seeds,
                       max_train, max_eval, epochs, batch_size, train_head, prefix_cache, lr_search, *advanced]

        # ---------------------------------------------------------------------- Experiment wiring
        def preview_form(form: ex.Form):
            """Run count and parameter counts of the form's selection (nothing is queued)."""
            view = ex.preview(form)
            field = view.get("field")
            layer_text = f"⚠️ {view['error']}" if field == "layers" else ""
            model_text = f"⚠️ {view['error']}" if field == "model" else ""
            return ex.preview_markdown(view), layer_text, model_text

        on_preview = form_handler(preview_form)

        # A typed model is looked up on Enter or blur; a picked one (public mode) as soon as it changes.
        model_events = [model.change] if public is not None else [model.submit, model.blur]
        preview_triggers = [c.change for c in form_inputs if c is not model] + model_events
        # preprocess=False: the raw values reach app.experiment.checked, which refuses a wrong type or size beside
        # its field in a short line (Gradio's own checks quote a megabyte value back, with Python's type names).
        gr.on(preview_triggers, on_preview, form_inputs, [preview, layers_msg, model_msg], api_name="preview",
              trigger_mode="always_last", show_progress="minimal", preprocess=False)

        # Any edit makes the last Submit message stale: clear it (on user input, so it never races a Submit).
        gr.on([c.input for c in form_inputs], lambda: "", None, submit_msg, show_progress="hidden", **private)

        def on_model(name, selected):
            try:
                info = ex.model_info(name)
            except ex.FormError as err:
                return gr.CheckboxGroup(), f"⚠️ {err}"
            n = info.num_layers
            kept = [v for v in (selected or []) if str(v).isdigit() and int(v) < n] or [str(n - 1)]
            return gr.CheckboxGroup(choices=ex.layer_toggle_choices(n), value=kept,
                                    info=f"{info.name}: {n} layers (0-{n - 1})"), ""

        gr.on(model_events, on_model, [model, layers], [layers, model_msg], **private)

        def depth(name) -> int:
            try:
                return ex.model_info(name).num_layers
            except ex.FormError:
                return 0

        layers_all.click(lambda name: [str(i) for i in range(depth(name))], model, layers, **private)
        layers_none.click(lambda: [], None, layers, **private)
        layers_first.click(lambda k, name: ex.first_layers(k, depth(name)), [layers_k, model], layers, **private)
        layers_last.click(lambda k, name: ex.last_layers(k, depth(name)), [layers_k, model], layers, **private)

        def on_families(fams):
            return gr.Number(value=ex.lr_default(fams), info=ex.lr_hint(fams))

        families.change(on_families, families, lr, **private)

        def submit_form(form: ex.Form, request=None, profile=None):
            """Validate the form and queue its runs: (message, layers message, model message, queued ids)."""
            try:
                out = ex.submit_form(registry, form, who(request, profile))
            except visitors.LoginRequired as err:
                out = ex.error_outcome(err)
            return out.message, out.layers_message, out.model_message, out.ids

        on_submit = form_handler(submit_form, identity=True)

        submit.click(on_submit, form_inputs, [submit_msg, layers_msg, model_msg, queued_ids], api_name="submit",
                     concurrency_limit=1, preprocess=False)

        def paper_offer(form: ex.Form):
            """The preset's confirmation for this form: (message, confirm button, cancel button, offer open)."""
            try:
                text, n = ex.paper_study_message(form, registry)
            except ValueError as err:
                return f"⚠️ {err}", gr.Button(visible=False), gr.Button(visible=False), False
            return text, gr.Button(f"Yes, queue {n} searches", visible=True), gr.Button(visible=True), True

        paper_targets = [paper_msg, paper_confirm, paper_cancel, paper_open]
        paper.click(form_handler(paper_offer), form_inputs, paper_targets, **private)

        def follow_form(is_open, form: ex.Form):
            """An open offer follows the form, so the count confirmed is the count queued."""
            return paper_offer(form) if is_open else (gr.skip(),) * len(paper_targets)

        on_form_change = form_handler(follow_form, before=("is_open",))

        gr.on(preview_triggers, on_form_change, [paper_open, *form_inputs], paper_targets,
              trigger_mode="always_last", show_progress="hidden", **private)

        # form_handler(identity=True): Gradio fills in the request only for a parameter it can see.
        def confirm_preset(form: ex.Form, request=None, profile=None):
            try:
                out = ex.submit_preset(registry, form, who(request, profile))
            except visitors.LoginRequired as err:
                out = ex.error_outcome(err)
            return out.message, "", gr.Button(visible=False), gr.Button(visible=False), False

        on_paper_confirm = form_handler(confirm_preset, identity=True)

        paper_confirm.click(on_paper_confirm, form_inputs, [submit_msg, *paper_targets],
                            concurrency_limit=1, **private)
        paper_cancel.click(lambda: ("", gr.Button(visible=False), gr.Button(visible=False), False), None,
                           paper_targets, **private)

        # ---------------------------------------------------------------------- Runs wiring
        def detail_outputs(run_id, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
            d = views.run_detail(registry, run_id, viewer=viewer_of(request, profile))
            run = registry.get(d.run_id) if d.run_id is not None and d.status == "succeeded" else None
            path = views.artifact_download(run) if run else None
            return (d.summary, d.curves, d.config or None, d.result, gr.Button(interactive=d.can_cancel),
                    gr.Button(interactive=d.can_retry), gr.DownloadButton(value=path, visible=bool(path)), d.key)

        detail_targets = [run_summary, run_curves, run_config, run_result, cancel, retry, download, detail_state]

        def refresh_runs(status, task_filter, run_id, key, choices_key, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
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
        timer.tick(refresh_runs, [runs_status, runs_task, run_select, detail_state, choices_state], runs_outputs,
                   show_progress="hidden", trigger_mode="always_last", **private)
        gr.on([runs_refresh.click, runs_status.change, runs_task.change, tab_runs.select], refresh_runs,
              [runs_status, runs_task, run_select, detail_state, choices_state], runs_outputs,
              show_progress="hidden", **private)
        # The live timer only runs while the Runs tab is open.
        tab_runs.select(lambda: gr.Timer(active=True), None, timer, **private)
        for other in (tab_experiment, tab_compare, tab_study, tab_weights, tab_play):
            other.select(lambda: gr.Timer(active=False), None, timer, **private)

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

        # ---------------------------------------------------------------------- Compare wiring
        def refresh_compare(task_name, layer_choice, run_ids, only):
            view = views.compare(registry, task_name, layer_choice, run_ids, only)
            choices = views.run_choices(registry, status="succeeded", task=task_name)
            layer_choices = views.layer_filter_choices(registry)
            return (view["score_by_family"], view["efficiency_frontier"], view["layer_module_heatmap"],
                    view["lr_searches"], view["training_curves"], view["config_diff"], view["results_table"],
                    views.results_note(view["results_table"], layer_choice, layer_choices),
                    views.results_csv_file(registry, layer_choice),
                    gr.Dropdown(choices=choices, value=[i for i in (run_ids or []) if i in {c[1] for c in choices}]),
                    gr.Dropdown(choices=layer_choices))

        compare_outputs = [chart_score, chart_frontier, chart_heatmap, chart_lr, chart_curves, config_diff,
                           results_table,
                           results_note, results_csv, compare_runs, compare_layers]
        gr.on([tab_compare.select, compare_refresh.click, compare_task.change, compare_layers.change], refresh_compare,
              [compare_task, compare_layers, compare_runs, only_diff], compare_outputs, **private)

        def refresh_selected(task_name, layer_choice, run_ids, only):
            view = views.compare(registry, task_name, layer_choice, run_ids, only)
            return view["training_curves"], view["config_diff"]

        gr.on([compare_runs.change, only_diff.change], refresh_selected,
              [compare_task, compare_layers, compare_runs, only_diff], [chart_curves, config_diff],
              trigger_mode="always_last", **private)

        # ---------------------------------------------------------------------- Study wiring
        def build_study(chosen, task_name):
            try:
                report, files = views.study(registry, chosen or None)
            except (ValueError, OSError) as err:
                empty = charts.empty_figure("Study", f"Could not build the report: {err}")
                return f"⚠️ {err}", None, empty, empty, empty, None, gr.Dropdown()
            figs = views.study_figures(report, task_name)
            return (views.study_summary(report), report.table, figs["layerwise"], figs["efficiency"],
                    figs["magnitude"], files, gr.Dropdown(choices=report.tasks or tasks,
                                                          value=task_name if task_name in report.tasks else
                                                          (report.tasks[0] if report.tasks else task_name)))

        study_outputs = [study_summary, study_table, chart_layerwise, chart_study_frontier, chart_mag_score,
                         study_files, study_task]
        gr.on([study_go.click, study_task.change], build_study, [study_tasks, study_task], study_outputs,
              trigger_mode="always_last", **private)

        # ---------------------------------------------------------------------- Weights wiring
        def show_magnitudes(name, kind, by_layer):
            try:
                mags = views.magnitudes(name)
            except (ValueError, OSError) as err:
                empty = charts.empty_figure("Weight magnitudes", f"Could not load {name}: {err}")
                return empty, empty, f"⚠️ {err}", name
            return (charts.magnitude_distributions(mags, kind, by_layer), charts.magnitude_heatmap(mags, kind), "",
                    name)

        weights_outputs = [chart_magnitudes, chart_mag_heatmap, weights_msg, weights_state]
        gr.on([weights_go.click, weights_kind.change, weights_by_layer.change], show_magnitudes,
              [weights_model, weights_kind, weights_by_layer], weights_outputs, **private)

        def on_weights_tab(name, kind, by_layer, shown):
            choices = gr.Dropdown(choices=views.run_choices(registry, status="succeeded"))
            if shown:  # already drawn in this session: only refresh the run list
                return (gr.skip(), gr.skip(), gr.skip(), shown, choices)
            return (*show_magnitudes(name, kind, by_layer), choices)

        tab_weights.select(on_weights_tab, [weights_model, weights_kind, weights_by_layer, weights_state],
                           [*weights_outputs, weights_runs], **private)

        def show_deltas(run_ids):
            if not run_ids:
                return charts.empty_figure(views.DELTAS_TITLE, views.NO_DELTAS), "Pick one or more succeeded runs."
            try:
                return charts.delta_by_layer(views.run_deltas(registry, run_ids)), ""
            except (ValueError, OSError) as err:
                return charts.empty_figure(views.DELTAS_TITLE, views.NO_DELTAS), f"⚠️ {err}"

        deltas_go.click(show_deltas, weights_runs, [chart_deltas, weights_msg], **private)

        # ---------------------------------------------------------------------- Playground wiring
        def on_play_tab(current):
            choices = views.run_choices(registry, status="succeeded")
            ids = [c[1] for c in choices]
            return gr.Dropdown(choices=choices, value=current if current in ids else (ids[0] if ids else None))

        tab_play.select(on_play_tab, play_run, play_run, **private)

        def on_play_run(run_id):
            if run_id in (None, ""):
                return gr.Textbox(label="Sentence"), gr.Textbox(visible=False), "No finished run yet: queue one " \
                    "in the Experiment tab."
            spec = views.task_inputs(registry, run_id)
            cols = spec["columns"]
            return (gr.Textbox(label=cols[0]), gr.Textbox(label=cols[1] if spec["pair"] else "", visible=spec["pair"]),
                    f"Task **{spec['task']}**" + (" compares two texts." if spec["pair"] else "."))

        play_run.change(on_play_run, play_run, [play_a, play_b, play_msg], **private)

        def on_predict(run_id, text_a, text_b):
            try:
                out = views.predict(registry, run_id, text_a, text_b)
            except (ValueError, OSError) as err:
                return None, None, f"⚠️ {err}"
            def fmt(v):  # class probabilities for gr.Label, or STS-B's similarity score as text
                return v if "score" not in v else f"similarity {v['score']:.3f}"

            return fmt(out["tuned"]), fmt(out["base"]), (
                f"Tuned: **{out['label']}** · untuned base: **{out['base_label']}** ({out['task']})")

        play_go.click(on_predict, [play_run, play_a, play_b], [play_tuned, play_base, play_msg], **private)

        # ---------------------------------------------------------------------- API-only endpoints
        def answered(action: str):
            """An API endpoint's errors as one line a caller can act on: a refusal's own message, anything else
            logged on the server and named without internals (app.errors)."""
            def wrap(fn):
                @functools.wraps(fn)
                def endpoint(*args, **kwargs):
                    try:
                        return fn(*args, **kwargs)
                    except Exception as err:
                        raise gr.Error(visitor_message(err, action), print_exception=False) from None
                return endpoint
            return wrap

        @answered("list the runs")
        def runs(status: str = "all", task: str = "all", request: gr.Request = None, profile: gr.OAuthProfile | None = None) -> list[dict]:
            """Runs newest first, as the registry lists them (status and task filters; 'all' = no filter)."""
            return views.runs_records(registry, status, task, viewer=viewer_of(request, profile))

        @answered("read the run")
        def run(run_id: int, request: gr.Request = None, profile: gr.OAuthProfile | None = None) -> dict:
            """Everything about one run: flat columns, config and result."""
            return views.run_record(registry, run_id, viewer=viewer_of(request, profile))

        @answered("read the compare data")
        def compare_data(task: str = "rte") -> list[dict]:
            """The succeeded runs of a task that the Compare charts plot (one point each)."""
            return views.compare_records(registry, task)

        @answered("cancel the run")
        def cancel_run(run_id: int, request: gr.Request, profile: gr.OAuthProfile | None = None) -> str:
            """Cancel a run: 'cancelled' (it was queued) or 'cancelling' (it stops at its next step)."""
            return ex.cancel_run(registry, run_id, who(request, profile))

        @answered("retry the run")
        def retry_run(run_id: int, request: gr.Request, profile: gr.OAuthProfile | None = None) -> int:
            """Queue a failed, cancelled or interrupted run again; returns the new run's id."""
            return ex.retry_run(registry, run_id, who(request, profile))

        @answered("predict")
        def predict(run_id: int, text: str, text_pair: str = "") -> dict:
            """A succeeded run's prediction for a text (or pair) next to the untuned base model's."""
            return views._json_safe(views.predict(registry, ex.run_id_of(run_id), text, text_pair))

        gr.api(runs, api_name="runs")
        gr.api(run, api_name="run")
        gr.api(compare_data, api_name="compare_data")
        gr.api(cancel_run, api_name="cancel")
        gr.api(retry_run, api_name="retry")
        gr.api(predict, api_name="predict")

        demo.load(on_preview, form_inputs, [preview, layers_msg, model_msg], **private)
    return demo
