"""The Experiment tab: the form (tasks, model, families, layers, settings and the Advanced settings made
from the RunConfig's Knobs), its live preview, Submit, and the paper-study preset with its confirmation."""

import gradio as gr

from moduletune.app.experiment import paper_offer
from moduletune.app.experiment.fields import FIELDS, field_messages
from moduletune.app.experiment.form import (
    ADVANCED,
    FAMILY_CHOICES,
    METHOD_CHOICES,
    Form,
    first_layers,
    last_layers,
    layer_toggle_choices,
    lr_default,
    lr_hint,
)
from moduletune.app.experiment.form_command import form_command
from moduletune.app.experiment.model_info import model_info
from moduletune.app.experiment.preview import preview, preview_markdown
from moduletune.app.experiment.submit import error_outcome
from moduletune.app.experiment.submit import submit_form as queue_form
from moduletune.app.experiment.widgets import field_message, form_handler, keep_in_browser, knob_input, restored_model
from moduletune.app.public import visitors
from moduletune.app.public.checks import FormError
from moduletune.app.public.errors import visitor_message
from moduletune.tuning.config import DEFAULT_MODEL


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
        depth = model_info(defaults.model)
        layer_choices, layers_note = layer_toggle_choices(depth.num_layers), depth.layers_note
    except FormError as err:  # e.g. an operator's default that cannot be read offline: the box says why
        layer_choices, layers_note = [(v, v) for v in defaults.layers], f"{defaults.model}: {err}"

    with gr.Tab("Experiment", id="experiment", elem_id="tab-experiment") as tab_experiment:
        with gr.Row(equal_height=False):
            with gr.Column(scale=7):
                with gr.Row():
                    with gr.Column(scale=1, min_width=160):
                        task = gr.Dropdown(
                            tasks,
                            value=list(defaults.tasks),
                            multiselect=True,
                            label="GLUE task(s)",
                            info="one run per task",
                            elem_id="task",
                        )
                        tasks_msg = field_message("tasks")
                    model = model_box(
                        "model",
                        2,
                        f"the embedded {DEFAULT_MODEL}, a Hub id "
                        "(bert-base-uncased) or a local path; press Enter to load "
                        "its layers",
                    )
                model_msg = field_message("model")
                families = gr.CheckboxGroup(
                    FAMILY_CHOICES,
                    value=list(defaults.families),
                    label="Module families",
                    elem_id="families",
                    info="each family is a separate run, everything else frozen",
                )
                families_msg = field_message("families")
                method = gr.Radio(
                    list(METHOD_CHOICES),
                    value=defaults.method,
                    label="method",
                    info="modules: tune the ticked families themselves; lora / ia3: peft's LoRA or (IA)³ adapter on "
                    "them (Q K V AO FI FO; LoRA's rank and alpha under More settings)",
                    elem_id="method",
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
                layers_msg = field_message("layers")
                with gr.Row():
                    with gr.Column(min_width=160):
                        lr = gr.Number(
                            lr_default(defaults.families),
                            label="Learning rate",
                            elem_id="lr",
                            info=lr_hint(defaults.families),
                        )
                        lr_msg = field_message("lr")
                    with gr.Column(min_width=160):
                        seeds = gr.Textbox(
                            defaults.seeds, label="Seeds", elem_id="seeds", info="comma-separated: one run per seed"
                        )
                        seeds_msg = field_message("seeds")
                with gr.Row(equal_height=True):
                    lr_search = gr.Checkbox(
                        defaults.lr_search,
                        elem_id="lr-search",
                        label="search the learning rate first (a fair lr per family: a race over its grid on a "
                        "held-out 10% of the training rows, 1.25-2.5x one run; the typed lr is then ignored)",
                        scale=3,
                    )
                    lr_search_scope = gr.Radio(
                        ["setting", "family"],
                        value=defaults.lr_search_scope,
                        label="one lr search per",
                        info="family (cheaper): one search on all layers, its lr reused for its single layers",
                        elem_id="lr-search-scope",
                        scale=2,
                    )
                # No minimum= on the number boxes: Gradio's own check would answer with a toast naming no field;
                # the form's check puts the allowed range beside the box instead.
                with gr.Row():
                    with gr.Column(min_width=160):
                        max_train = gr.Number(
                            defaults.max_train,
                            label="Training examples",
                            precision=0,
                            elem_id="max-train",
                            info="a seeded, stratified sample; 0 = the whole training set",
                        )
                        max_train_msg = field_message("max_train")
                    with gr.Column(min_width=160):
                        # 0 is the whole set; the public demo caps it, and its cap covers SST-2's 872.
                        max_eval = gr.Number(
                            defaults.max_eval or (public.max_eval if public else 0),
                            label="Evaluation examples",
                            precision=0,
                            elem_id="max-eval",
                            info="0 = the whole validation set",
                        )
                        max_eval_msg = field_message("max_eval")
                with gr.Accordion("More settings", open=False) as more_settings:
                    with gr.Row():
                        with gr.Column(min_width=120):
                            epochs = gr.Number(defaults.epochs, label="Epochs", precision=0, elem_id="epochs")
                            epochs_msg = field_message("epochs")
                        with gr.Column(min_width=120):
                            batch_size = gr.Number(
                                defaults.batch_size, label="Batch size", precision=0, elem_id="batch-size"
                            )
                            batch_size_msg = field_message("batch_size")
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
                    for i in range(0, len(ADVANCED), 3):  # three to a row
                        with gr.Row():
                            advanced += [knob_input(name) for name in ADVANCED[i : i + 3]]
                    settings_msg = field_message("settings")
            with gr.Column(scale=6):
                preview_box = gr.Markdown("Counting parameters…", elem_id="preview")
                submit = gr.Button("Queue runs", variant="primary", elem_id="submit")
                submit_msg = gr.Markdown("", elem_id="submit-msg")
                queued_ids = gr.JSON(visible=False)
                # Inside the tab: a component made directly under gr.Tabs becomes a tab of its own, and the
                # tab bar then drew each clicked tab's button again in place of its neighbour's.
                saved_form = gr.BrowserState({}, storage_key="moduletune-form")
                with gr.Accordion("Show the command", open=False, elem_id="command-box") as command_box:
                    command = gr.Code(
                        "",
                        language="shell",
                        label="The same runs from a shell (copy it; it queues what Queue runs would)",
                        elem_id="command",
                        interactive=False,
                        lines=2,
                        wrap_lines=True,
                        buttons=["copy"],
                    )
                offer = paper_offer.layout()

    form_inputs = [
        task,
        model,
        families,
        method,
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
        lr_search_scope,
        offer.baselines,
        *advanced,
    ]

    # One message line beside each control, in app.form.FIELDS order; the accordion opens on a message in it.
    field_msgs = [
        tasks_msg,
        model_msg,
        families_msg,
        layers_msg,
        lr_msg,
        seeds_msg,
        max_train_msg,
        max_eval_msg,
        epochs_msg,
        batch_size_msg,
        settings_msg,
    ]
    assert len(field_msgs) == len(FIELDS)
    in_more_settings = ("epochs", "batch_size", "settings")

    def beside(fld, text) -> list:
        """The field messages (text beside fld) and the More settings accordion (opened when fld is in it)."""
        more = gr.Accordion(open=True) if fld in in_more_settings else gr.skip()
        return [*field_messages(fld, text), more]

    def preview_form(form: Form):
        """Run count and parameter counts of the form's selection (nothing is queued)."""
        view = preview(form)
        text = f"⚠️ {view['error']}" if view.get("error") else ""
        return preview_markdown(view), *beside(view.get("field"), text)

    on_preview = form_handler(preview_form)

    # A typed model is looked up on Enter or blur; a picked one (public mode) as soon as it changes.
    model_events = [model.change] if public is not None else [model.submit, model.blur]
    preview_triggers = [c.change for c in form_inputs if c is not model] + model_events
    # preprocess=False: the raw values reach app.experiment.checked, which refuses a wrong type or size beside
    # its field in a short line (Gradio's own checks quote a megabyte value back, with Python's type names).
    # trigger_mode="multiple" (each change answered in turn; one at a time, so the last answer is the last change):
    # with "always_last", several changes arriving together (a reload restoring seeds and families) made Gradio 6
    # re-fire the changes for as long as the page stayed open, ~10 events a second (test_browser checks it is idle).
    gr.on(
        preview_triggers,
        on_preview,
        form_inputs,
        [preview_box, *field_msgs, more_settings],
        api_name="preview",
        trigger_mode="multiple",
        show_progress="minimal",
        preprocess=False,
    )

    # Any edit makes the last Submit message stale: clear it (on user input, so it never races a Submit).
    gr.on([c.input for c in form_inputs], lambda: "", None, submit_msg, show_progress="hidden", **private)

    def on_model(name, selected):
        try:
            info = model_info(name)
        except FormError as err:
            return gr.CheckboxGroup(), f"⚠️ {err}"
        n = info.num_layers
        kept = [v for v in (selected or []) if str(v).isdigit() and int(v) < n] or [str(n - 1)]
        return gr.CheckboxGroup(choices=layer_toggle_choices(n), value=kept, info=info.layers_note), ""

    gr.on(model_events, on_model, [model, layers], [layers, model_msg], **private)

    def depth(name) -> int:
        try:
            return model_info(name).num_layers
        except FormError:
            return 0

    layers_all.click(lambda name: [str(i) for i in range(depth(name))], model, layers, **private)
    layers_none.click(lambda: [], None, layers, **private)
    layers_first.click(lambda k, name: first_layers(k, depth(name)), [layers_k, model], layers, **private)
    layers_last.click(lambda k, name: last_layers(k, depth(name)), [layers_k, model], layers, **private)

    def on_families(fams, how):
        """The lr box shows the default of what will train: the families, or the method wrapping them."""
        fams = [f"{how}:{f}" for f in fams or []] if how in METHOD_CHOICES[1:] else fams
        return gr.Number(value=lr_default(fams), info=lr_hint(fams))

    gr.on([families.change, method.change], on_families, [families, method], lr, **private)

    def submit_form(form: Form, request=None, profile=None):
        """Validate the form and queue its runs: (message, queued ids, one message beside each field ...)."""
        try:
            out = queue_form(registry, form, who(request, profile))
        except visitors.LoginRequired as err:
            out = error_outcome(err)
        return out.message, out.ids, *beside(out.control, out.field_message)

    on_submit = form_handler(submit_form, identity=True)

    submit.click(
        on_submit,
        form_inputs,
        [submit_msg, queued_ids, *field_msgs, more_settings],
        api_name="submit",
        concurrency_limit=1,
        preprocess=False,
    )

    paper_offer.wire(ctx, offer, form_inputs, families, preview_triggers, submit_msg)

    def show_command(form: Form):
        """The `moduletune submit|sweep` line equal to the form, or why there is none yet."""
        try:
            return form_command(form)
        except Exception as err:  # a refusal says what to fix, as the preview does
            return f"# no command yet: {visitor_message(err, 'write the command')}"

    on_command = form_handler(show_command)
    # Written when the box is opened, and kept equal to the form while it is open.
    command_box.expand(on_command, form_inputs, command, preprocess=False, **private)
    gr.on(preview_triggers, on_command, form_inputs, command, trigger_mode="multiple", preprocess=False, **private)

    restored = keep_in_browser(demo, form_inputs, saved_form, private)

    # After the restore: the restored model's layer toggles, then the preview and the command of the form.
    # Only the restored model's toggles (its depth): the restored values' own change events bring the preview, and an
    # answer computed from the values at load would undo what a person did meanwhile.
    restored.then(restored_model, model, layers, **private)
    demo.load(on_preview, form_inputs, [preview_box, *field_msgs, more_settings], preprocess=False, **private)
    return tab_experiment
