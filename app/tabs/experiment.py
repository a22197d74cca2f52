"""The Experiment tab: the form (tasks, model, families, layers, settings and the Advanced settings made
from the RunConfig's Knobs), its live preview, Submit, and the paper-study preset with its confirmation."""

import gradio as gr

from moduletune.app import experiment as ex
from moduletune.app import visitors
from moduletune.app.form import FORM_PARAMS, form_of
from moduletune.tuning.config import DEFAULT_MODEL


def form_handler(body, before: tuple[str, ...] = (), identity: bool = False):
    """A Gradio handler over the whole form: one named parameter per form value (what the API and
    gradio_client see), and body(*before_values, form[, request, profile]) receiving one Form.

    With identity, Gradio fills in the request and the OAuth profile (by their annotations) after the form."""
    import inspect

    import gradio as gr

    names = (*before, *FORM_PARAMS)

    def handler(*args):
        values = dict(zip(names, args))
        rest = args[len(names) :]
        return body(*(values[n] for n in before), form_of(values), *rest)

    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in names]
    handler.__annotations__ = {}
    if identity:
        params += [
            inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in ("request", "profile")
        ]
        handler.__annotations__ = {"request": gr.Request, "profile": gr.OAuthProfile | None}
    handler.__signature__ = inspect.Signature(params)
    handler.__name__ = handler.__qualname__ = body.__name__
    handler.__doc__ = body.__doc__
    return handler


def knob_input(name: str):
    """The form input for one Advanced setting, made from its Knob: label, help, bounds, choices, default."""
    import gradio as gr

    from moduletune.tuning.config import KNOBS, RunConfig

    k = KNOBS[name]
    default = RunConfig.__dataclass_fields__[name].default
    label = k.label or name.replace("_", " ").replace("lr ", "LR ").replace("cuda ", "CUDA ")
    label = label[0].upper() + label[1:]
    common = dict(label=label, info=k.help, elem_id="adv-" + name.replace("_", "-"))
    if k.kind == "int":
        # No minimum or maximum here: the Knob's own check names the range beside the field, and an optional
        # setting's box holds 0 for "the default" (a number box cannot be blank).
        if k.optional:
            common["info"] += " (0 = the default)"
        return gr.Number(0 if default is None else default, precision=0, **common)
    if k.kind == "number":
        return gr.Number(default, **common)
    if k.kind == "choice":
        return gr.Dropdown(list(k.choices), value=default, **common)
    if k.kind == "bool":
        return gr.Checkbox(default, **common)
    return gr.Textbox(
        "" if default is None else str(default), placeholder="default" if default is None else None, **common
    )


def build(ctx):
    """Lay out the tab and wire its events inside the Blocks being built; returns the Tab."""
    (registry, public, who, model_box, tasks, defaults, private, demo) = (
        ctx.registry,
        ctx.public,
        ctx.who,
        ctx.model_box,
        ctx.tasks,
        ctx.defaults,
        ctx.private,
        ctx.demo,
    )
    try:  # the default model's config alone (the embedded model's is a local file): its layer count
        depth = ex.model_info(defaults.model)
        layer_choices, layers_note = ex.layer_toggle_choices(depth.num_layers), depth.layers_note
    except ex.FormError as err:  # e.g. an operator's default that cannot be read offline: the box says why
        layer_choices, layers_note = [(v, v) for v in defaults.layers], f"{defaults.model}: {err}"

    with gr.Tab("Experiment", id="experiment", elem_id="tab-experiment") as tab_experiment:
        with gr.Row(equal_height=False):
            with gr.Column(scale=7):
                with gr.Row():
                    task = gr.Dropdown(
                        tasks,
                        value=list(defaults.tasks),
                        multiselect=True,
                        label="GLUE task(s)",
                        info="one run per task",
                        elem_id="task",
                        scale=1,
                    )
                    model = model_box(
                        "model",
                        2,
                        f"the embedded {DEFAULT_MODEL}, a Hub id "
                        "(bert-base-uncased) or a local path; press Enter to load "
                        "its layers",
                    )
                model_msg = gr.Markdown("", elem_id="model-msg")
                families = gr.CheckboxGroup(
                    ex.FAMILY_CHOICES,
                    value=list(defaults.families),
                    label="Module families",
                    elem_id="families",
                    info="each family is a separate run, everything else frozen",
                )
                with gr.Row():
                    together = gr.Checkbox(
                        False, label="train the chosen families together in one run", elem_id="together"
                    )
                    random_control = gr.Checkbox(
                        False, label="add a random control of the same size (random:<family>)", elem_id="random-control"
                    )
                with gr.Column(variant="panel"):
                    layers = gr.CheckboxGroup(
                        layer_choices,
                        value=list(defaults.layers),
                        label="Layers",
                        elem_id="layers",
                        info=f"{layers_note}; the families are trained in the layers that are on",
                    )
                    with gr.Row(equal_height=False, elem_classes="layer-buttons"):
                        layers_all = gr.Button("all", size="sm", elem_id="layers-all", min_width=60, scale=0)
                        layers_none = gr.Button("none", size="sm", elem_id="layers-none", min_width=60, scale=0)
                        layers_first = gr.Button("first k", size="sm", elem_id="layers-first", min_width=80, scale=0)
                        layers_last = gr.Button("last k", size="sm", elem_id="layers-last", min_width=80, scale=0)
                        layers_k = gr.Number(
                            2,
                            show_label=False,
                            container=False,
                            precision=0,
                            minimum=1,
                            elem_id="layers-k",
                            min_width=70,
                            scale=0,
                            placeholder="k",
                        )
                    with gr.Row(equal_height=True):
                        layer_spec = gr.Textbox(
                            "",
                            label="…or type a layer spec (overrides the toggles)",
                            placeholder="e.g. 0-2,5 · last:2 · all · each",
                            elem_id="layer-spec",
                            scale=3,
                        )
                        each_layer = gr.Checkbox(
                            False, label="each layer separately (one run per layer)", elem_id="each-layer", scale=2
                        )
                layers_msg = gr.Markdown("", elem_id="layers-msg")
                with gr.Row():
                    lr = gr.Number(
                        ex.lr_default(defaults.families),
                        label="Learning rate",
                        elem_id="lr",
                        info=ex.lr_hint(defaults.families),
                    )
                    seeds = gr.Textbox(
                        defaults.seeds, label="Seeds", elem_id="seeds", info="comma-separated: one run per seed"
                    )
                lr_search = gr.Checkbox(
                    defaults.lr_search,
                    elem_id="lr-search",
                    label="search the learning rate first (a fair lr per family: "
                    "successive halving on a held-out 10% of the training rows, "
                    "about 1.5× one run; the typed lr is then ignored)",
                )
                with gr.Row():
                    max_train = gr.Number(
                        defaults.max_train,
                        label="Training examples",
                        precision=0,
                        minimum=0,
                        elem_id="max-train",
                        info="a seeded, stratified sample; 0 = the whole training set",
                    )
                    # 0 is the whole set; the public demo caps it, and its cap covers SST-2's 872.
                    max_eval = gr.Number(
                        defaults.max_eval or (public.max_eval if public else 0),
                        label="Evaluation examples",
                        precision=0,
                        minimum=0,
                        elem_id="max-eval",
                        info="0 = the whole validation set",
                    )
                with gr.Accordion("More settings", open=False):
                    with gr.Row():
                        epochs = gr.Number(defaults.epochs, label="Epochs", precision=0, minimum=1, elem_id="epochs")
                        batch_size = gr.Number(
                            defaults.batch_size, label="Batch size", precision=0, minimum=1, elem_id="batch-size"
                        )
                        train_head = gr.Checkbox(True, label="train the classifier head too", elem_id="train-head")
                    prefix_cache = gr.Radio(
                        ["auto", "on", "off"],
                        value=defaults.prefix_cache,
                        label="Frozen-prefix cache",
                        elem_id="prefix-cache",
                        info="on: the frozen layers below the lowest trainable one run once, without "
                        "dropout, and are reused across epochs and runs (a layer-wise sweep pays for "
                        "them once); auto: only where that changes nothing; off: never",
                    )
                    gr.Markdown(
                        "**Advanced settings** (blank = the default; `moduletune run --help` says the same)",
                        elem_classes="help",
                    )
                    advanced = []
                    for i in range(0, len(ex.ADVANCED), 3):  # three to a row
                        with gr.Row():
                            advanced += [knob_input(name) for name in ex.ADVANCED[i : i + 3]]
            with gr.Column(scale=6):
                preview = gr.Markdown("Counting parameters…", elem_id="preview")
                submit = gr.Button("Queue runs", variant="primary", elem_id="submit")
                submit_msg = gr.Markdown("", elem_id="submit-msg")
                queued_ids = gr.JSON(visible=False)
                with gr.Group():
                    gr.Markdown(
                        "**Preset: the paper's study.** Every module family (Q K V AO FI FO LN; bias "
                        "too when ticked above, random controls when asked) on all layers and on "
                        "each layer separately, plus full fine-tuning, on the chosen tasks, seeds "
                        "and subsampling; each setting searches its own learning rate first.",
                        elem_classes="help",
                        padding=True,
                    )
                    paper = gr.Button("Queue the paper's study…", elem_id="paper-study")
                    paper_msg = gr.Markdown("", elem_id="paper-msg")
                    with gr.Row():
                        paper_confirm = gr.Button(
                            "Yes, queue them", variant="primary", visible=False, elem_id="paper-confirm"
                        )
                        paper_cancel = gr.Button("Cancel", visible=False, elem_id="paper-cancel")
                    paper_open = gr.State(False)

    form_inputs = [
        task,
        model,
        families,
        together,
        random_control,
        layers,
        layer_spec,
        each_layer,
        lr,
        seeds,
        max_train,
        max_eval,
        epochs,
        batch_size,
        train_head,
        prefix_cache,
        lr_search,
        *advanced,
    ]

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
    gr.on(
        preview_triggers,
        on_preview,
        form_inputs,
        [preview, layers_msg, model_msg],
        api_name="preview",
        trigger_mode="always_last",
        show_progress="minimal",
        preprocess=False,
    )

    # Any edit makes the last Submit message stale: clear it (on user input, so it never races a Submit).
    gr.on([c.input for c in form_inputs], lambda: "", None, submit_msg, show_progress="hidden", **private)

    def on_model(name, selected):
        try:
            info = ex.model_info(name)
        except ex.FormError as err:
            return gr.CheckboxGroup(), f"⚠️ {err}"
        n = info.num_layers
        kept = [v for v in (selected or []) if str(v).isdigit() and int(v) < n] or [str(n - 1)]
        return gr.CheckboxGroup(choices=ex.layer_toggle_choices(n), value=kept, info=info.layers_note), ""

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

    submit.click(
        on_submit,
        form_inputs,
        [submit_msg, layers_msg, model_msg, queued_ids],
        api_name="submit",
        concurrency_limit=1,
        preprocess=False,
    )

    def paper_offer(form: ex.Form):
        """The preset's confirmation for this form: (message, confirm button, cancel button, offer open)."""
        try:
            text, n = ex.paper_study_message(form, registry)
        except ValueError as err:
            return f"⚠️ {err}", gr.Button(visible=False), gr.Button(visible=False), False
        return text, gr.Button(f"Yes, queue {n} searches", visible=True), gr.Button(visible=True), True

    paper_targets = [paper_msg, paper_confirm, paper_cancel, paper_open]
    paper.click(form_handler(paper_offer), form_inputs, paper_targets, preprocess=False, **private)

    def follow_form(is_open, form: ex.Form):
        """An open offer follows the form, so the count confirmed is the count queued."""
        return paper_offer(form) if is_open else (gr.skip(),) * len(paper_targets)

    on_form_change = form_handler(follow_form, before=("is_open",))

    gr.on(
        preview_triggers,
        on_form_change,
        [paper_open, *form_inputs],
        paper_targets,
        trigger_mode="always_last",
        show_progress="hidden",
        preprocess=False,
        **private,
    )

    # form_handler(identity=True): Gradio fills in the request only for a parameter it can see.
    def confirm_preset(form: ex.Form, request=None, profile=None):
        try:
            out = ex.submit_preset(registry, form, who(request, profile))
        except visitors.LoginRequired as err:
            out = ex.error_outcome(err)
        return out.message, "", gr.Button(visible=False), gr.Button(visible=False), False

    on_paper_confirm = form_handler(confirm_preset, identity=True)

    paper_confirm.click(
        on_paper_confirm, form_inputs, [submit_msg, *paper_targets], concurrency_limit=1, preprocess=False, **private
    )
    paper_cancel.click(
        lambda: ("", gr.Button(visible=False), gr.Button(visible=False), False), None, paper_targets, **private
    )

    demo.load(on_preview, form_inputs, [preview, layers_msg, model_msg], preprocess=False, **private)
    return tab_experiment
