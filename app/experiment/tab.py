"""The Experiment tab: the form (the sweep's controls, and the settings made from the RunConfig's Knobs), its live
preview, Submit, and the paper-study preset with its confirmation.

The layout returns its components by name (Layout); each handler takes the form by name (Gradio's inputs_kwargs:
one keyword argument per form parameter, which are also the API's parameter names) and answers the message lines by
their component, never by position."""

from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from moduletune.app.experiment import paper_offer
from moduletune.app.experiment.fields import FIELDS, field_messages
from moduletune.app.experiment.form import (
    ADVANCED,
    FAMILY_CHOICES,
    FORM_PARAMS,
    MAIN,
    METHOD_CHOICES,
    first_layers,
    form_of,
    last_layers,
    layer_toggle_choices,
    lr_default,
    lr_hint,
)
from moduletune.app.experiment.form_command import form_command
from moduletune.app.experiment.model_info import model_info
from moduletune.app.experiment.preview import preview, preview_markdown
from moduletune.app.experiment.submit import error_outcome, submit_form
from moduletune.app.experiment.widgets import field_message, keep_in_browser, restored_model, setting_input
from moduletune.app.public import visitors
from moduletune.app.public.checks import FormError
from moduletune.app.public.errors import visitor_message
from moduletune.tuning.config import KNOBS

# The main settings laid out by the sweep's controls they go with (the model by the tasks, the lr by the seeds, the
# lr search by its scope); the sample sizes (optional counts) side by side; the rest under More settings.
BY_THE_SWEEP = ("model", "lr", "lr_search")
SAMPLES = tuple(n for n in MAIN if n not in BY_THE_SWEEP and KNOBS[n].kind == "int" and KNOBS[n].optional)
MORE = tuple(sorted((n for n in MAIN if n not in BY_THE_SWEEP + SAMPLES), key=lambda n: KNOBS[n].kind == "bool"))


@dataclass
class Layout:
    """The Experiment tab's components by name."""

    inputs: dict  # form parameter name (app.experiment.form.FORM_PARAMS) -> its control
    messages: dict  # control (app.experiment.fields.FIELDS) -> the message line beside it
    more_settings: gr.Accordion
    layer_buttons: SimpleNamespace  # all, none, first, last, k
    preview: gr.Markdown
    submit: gr.Button
    submit_msg: gr.Markdown
    queued_ids: gr.JSON
    saved_form: gr.BrowserState
    command_box: gr.Accordion
    command: gr.Code
    offer: SimpleNamespace  # the paper-study offer (app.experiment.paper_offer)

    @property
    def form_inputs(self) -> list:
        """The form's controls, for the events any of them triggers."""
        return list(self.inputs.values())

    @property
    def beside(self) -> list:
        """What a check answers: the message lines (FIELDS order), then the More settings accordion."""
        return [*self.messages.values(), self.more_settings]


def build(ctx):
    """Lay out the tab and wire its events inside the Blocks being built; returns the Tab."""
    with gr.Tab("Experiment", id="experiment", elem_id="tab-experiment") as tab:
        ui = layout(ctx)
    wire(ctx, ui)
    return tab


def layout(ctx) -> Layout:
    """The form on the left, the preview, Submit, the command and the preset on the right."""
    inputs, messages = {}, {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=7):
            what_to_train(ctx, inputs, messages)
            buttons = layer_controls(ctx, inputs, messages)
            how_to_train(ctx, inputs, messages)
            samples(ctx, inputs, messages)
            with gr.Accordion("More settings", open=False) as more_settings:
                more(inputs, messages)
        with gr.Column(scale=6):
            right = right_column()
    inputs["baselines"] = right.offer.baselines
    assert set(inputs) == set(FORM_PARAMS) and set(messages) == set(FIELDS), "a control without its place"
    return Layout(
        inputs={name: inputs[name] for name in FORM_PARAMS},
        messages={name: messages[name] for name in FIELDS},
        more_settings=more_settings,
        layer_buttons=buttons,
        **vars(right),
    )


def what_to_train(ctx, inputs: dict, messages: dict) -> None:
    """Tasks and model, the module families and how they are trained (method, together, random control)."""
    defaults = ctx.defaults
    with gr.Row():
        with gr.Column(scale=1, min_width=160):
            inputs["tasks"] = gr.Dropdown(
                ctx.tasks,
                value=list(defaults.tasks),
                multiselect=True,
                label="GLUE task(s)",
                info="one run per task",
                elem_id="task",
            )
            messages["tasks"] = field_message("tasks")
        inputs["model"] = setting_input("model", "model", model_box=ctx.model_box)
    messages["model"] = field_message("model")
    inputs["families"] = gr.CheckboxGroup(
        FAMILY_CHOICES,
        value=list(defaults.families),
        label="Module families",
        elem_id="families",
        info="each family is a separate run, everything else frozen",
    )
    messages["families"] = field_message("families")
    inputs["method"] = gr.Radio(
        list(METHOD_CHOICES),
        value=defaults.method,
        label="method",
        info="modules: tune the ticked families themselves; lora / ia3: peft's LoRA or (IA)³ adapter on "
        "them (Q K V AO FI FO; LoRA's rank and alpha under More settings)",
        elem_id="method",
    )
    with gr.Row():
        inputs["together"] = gr.Checkbox(
            False, label="train the chosen families together in one run", elem_id="together"
        )
        inputs["random_control"] = gr.Checkbox(
            False, label="add a random control of the same size (random:<family>)", elem_id="random-control"
        )


def layer_controls(ctx, inputs: dict, messages: dict) -> SimpleNamespace:
    """The layer toggles (the default model's depth), the all / none / first k / last k buttons and the typed spec."""
    defaults = ctx.defaults
    try:  # the default model's config alone (the embedded model's is a local file): its layer count
        depth = model_info(defaults.model)
        layer_choices, layers_note = layer_toggle_choices(depth.num_layers), depth.layers_note
    except FormError as err:  # e.g. an operator's default that cannot be read offline: the box says why
        layer_choices, layers_note = [(v, v) for v in defaults.layers], f"{defaults.model}: {err}"
    with gr.Column(variant="panel"):
        inputs["layers"] = gr.CheckboxGroup(
            layer_choices,
            value=list(defaults.layers),
            label="Layers",
            elem_id="layers",
            info=f"{layers_note}; the families are trained in the layers that are on",
        )
        with gr.Row(equal_height=False, elem_classes="layer-buttons"):
            buttons = SimpleNamespace(
                all=gr.Button("all", size="sm", elem_id="layers-all", min_width=60, scale=0),
                none=gr.Button("none", size="sm", elem_id="layers-none", min_width=60, scale=0),
                first=gr.Button("first k", size="sm", elem_id="layers-first", min_width=80, scale=0),
                last=gr.Button("last k", size="sm", elem_id="layers-last", min_width=80, scale=0),
                k=gr.Number(
                    2,
                    show_label=False,
                    container=False,
                    precision=0,
                    minimum=1,
                    elem_id="layers-k",
                    min_width=70,
                    scale=0,
                    placeholder="k",
                ),
            )
        with gr.Row(equal_height=True):
            inputs["layer_spec"] = gr.Textbox(
                "",
                label="…or type a layer spec (overrides the toggles)",
                placeholder="e.g. 0-2,5 · last:2 · all · each",
                elem_id="layer-spec",
                scale=3,
            )
            inputs["each_layer"] = gr.Checkbox(
                False, label="each layer separately (one run per layer)", elem_id="each-layer", scale=2
            )
    messages["layers"] = field_message("layers")
    return buttons


def how_to_train(ctx, inputs: dict, messages: dict) -> None:
    """The learning rate (its family's default shown) beside the seeds; the lr search beside its scope."""
    families = list(inputs["families"].value)
    with gr.Row():
        with gr.Column(min_width=160):
            inputs["lr"] = setting_input("lr", "lr", value=lr_default(families), info=lr_hint(families))
            messages["lr"] = field_message("lr")
        with gr.Column(min_width=160):
            inputs["seeds"] = gr.Textbox(
                ctx.defaults.seeds, label="Seeds", elem_id="seeds", info="comma-separated: one run per seed"
            )
            messages["seeds"] = field_message("seeds")
    with gr.Row(equal_height=True):
        inputs["lr_search"] = setting_input("lr_search", "lr-search", scale=3)
        inputs["lr_search_scope"] = gr.Radio(
            ["setting", "family"],
            value=ctx.defaults.lr_search_scope,
            label="one lr search per",
            info="family (cheaper): one search on all layers, its lr reused for its single layers",
            elem_id="lr-search-scope",
            scale=2,
        )


def setting_cell(name: str, inputs: dict, messages: dict, **shown) -> None:
    """One main setting's input made from its Knob, with its message line when it has one."""
    with gr.Column(min_width=120):
        inputs[name] = setting_input(name, name.replace("_", "-"), **shown)
        if name in FIELDS:
            messages[name] = field_message(name)


def samples(ctx, inputs: dict, messages: dict) -> None:
    """The sample sizes side by side. No minimum= on the boxes: Gradio's own check would answer with a toast naming
    no field; the form's check puts the allowed range beside the box instead."""
    with gr.Row():
        for name in SAMPLES:
            # A public demo caps what 0 (the whole set) would mean: its box starts at the cap instead.
            cap = getattr(ctx.public, name, None) if ctx.public is not None else None
            shown = {"value": cap} if cap is not None and getattr(ctx.defaults, name) is None else {}
            setting_cell(name, inputs, messages, **shown)


def more(inputs: dict, messages: dict) -> None:
    """More settings: the other main settings, then the Advanced ones (three to a row), each made from its Knob."""
    with gr.Row():
        for name in MORE:
            if KNOBS[name].kind != "choice":
                setting_cell(name, inputs, messages)
    for name in MORE:
        if KNOBS[name].kind == "choice":
            inputs[name] = setting_input(name, name.replace("_", "-"))
    gr.Markdown(
        "**Advanced settings** (blank = the default; `moduletune run --help` says the same)", elem_classes="help"
    )
    for i in range(0, len(ADVANCED), 3):
        with gr.Row():
            for name in ADVANCED[i : i + 3]:
                inputs[name] = setting_input(name, "adv-" + name.replace("_", "-"))
    messages["settings"] = field_message("settings")


def right_column() -> SimpleNamespace:
    """The preview, Submit and its message, the form kept in the browser, the command and the paper-study offer."""
    preview_box = gr.Markdown("Counting parameters…", elem_id="preview")
    submit = gr.Button("Queue runs", variant="primary", elem_id="submit")
    submit_msg = gr.Markdown("", elem_id="submit-msg")
    queued_ids = gr.JSON(visible=False)
    # Inside the tab: a component made directly under gr.Tabs becomes a tab of its own, and the tab bar then drew
    # each clicked tab's button again in place of its neighbour's.
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
    return SimpleNamespace(
        preview=preview_box,
        submit=submit,
        submit_msg=submit_msg,
        queued_ids=queued_ids,
        saved_form=saved_form,
        command_box=command_box,
        command=command,
        offer=offer,
    )


def beside(ui: Layout, fld: str | None, text: str) -> dict:
    """The message lines (text beside fld, the others blank) and the More settings accordion, opened when fld is
    in it, by component."""
    out: dict = dict(zip(ui.messages.values(), field_messages(fld, text), strict=True))
    out[ui.more_settings] = gr.Accordion(open=True) if fld in MORE_FIELDS else gr.skip()
    return out


# The message lines inside More settings: the other main settings' and the settings'.
MORE_FIELDS = tuple(n for n in FIELDS if n in MORE) + ("settings",)


def wire(ctx, ui: Layout) -> None:
    """The tab's events: the preview and the command follow the form, Submit queues it, the model and the layer
    buttons set the toggles, the families the lr shown, the browser keeps the form, the preset its offer."""
    # A typed model is looked up on Enter or blur; a picked one (public mode) as soon as it changes.
    model = ui.inputs["model"]
    model_events = [model.change] if ctx.public is not None else [model.submit, model.blur]
    triggers = [c.change for c in ui.form_inputs if c is not model] + model_events
    on_preview = wire_preview(ctx, ui, triggers)
    wire_submit(ctx, ui)
    wire_layers(ctx, ui, model_events)
    wire_command(ctx, ui, triggers)
    paper_offer.wire(ctx, ui.offer, ui.inputs, triggers, ui.submit_msg)
    restored = keep_in_browser(ctx.demo, ui.inputs, ui.saved_form, ctx.private)
    # After the restore: the restored model's layer toggles, then the preview and the command of the form.
    # Only the restored model's toggles (its depth): the restored values' own change events bring the preview, and an
    # answer computed from the values at load would undo what a person did meanwhile.
    restored.then(restored_model, model, ui.inputs["layers"], **ctx.private)
    ctx.demo.load(
        on_preview, inputs_kwargs=ui.inputs, outputs=[ui.preview, *ui.beside], preprocess=False, **ctx.private
    )


def wire_preview(ctx, ui: Layout, triggers: list):
    """The preview follows the form; returns its handler (the page's load runs it too)."""

    def preview_form(**values) -> dict:
        """Run count and parameter counts of the form's selection (nothing is queued)."""
        view = preview(form_of(values))
        text = f"⚠️ {view['error']}" if view.get("error") else ""
        return {ui.preview: preview_markdown(view), **beside(ui, view.get("field"), text)}

    # preprocess=False: the raw values reach app.experiment.checked, which refuses a wrong type or size beside
    # its field in a short line (Gradio's own checks quote a megabyte value back, with Python's type names).
    # trigger_mode="multiple" (each change answered in turn; one at a time, so the last answer is the last change):
    # with "always_last", several changes arriving together (a reload restoring seeds and families) made Gradio 6
    # re-fire the changes for as long as the page stayed open, ~10 events a second (test_browser checks it is idle).
    gr.on(
        triggers,
        preview_form,
        inputs_kwargs=ui.inputs,
        outputs=[ui.preview, *ui.beside],
        api_name="preview",
        trigger_mode="multiple",
        show_progress="minimal",
        preprocess=False,
    )
    # Any edit makes the last Submit message stale: clear it (on user input, so it never races a Submit).
    gr.on([c.input for c in ui.form_inputs], lambda: "", None, ui.submit_msg, show_progress="hidden", **ctx.private)
    return preview_form


def wire_submit(ctx, ui: Layout) -> None:
    """Submit validates the form and queues its runs, or says beside which control what to fix."""
    registry, who = ctx.registry, ctx.who

    def submit(request: gr.Request, profile: gr.OAuthProfile | None, **values) -> dict:
        """Validate the form and queue its runs: (message, queued ids, one message beside each field ...)."""
        try:
            out = submit_form(registry, form_of(values), who(request, profile))
        except visitors.LoginRequired as err:
            out = error_outcome(err)
        return {ui.submit_msg: out.message, ui.queued_ids: out.ids, **beside(ui, out.control, out.field_message)}

    ui.submit.click(
        submit,
        inputs_kwargs=ui.inputs,
        outputs=[ui.submit_msg, ui.queued_ids, *ui.beside],
        api_name="submit",
        concurrency_limit=1,
        preprocess=False,
    )


def wire_layers(ctx, ui: Layout, model_events: list) -> None:
    """A model's depth sets the toggles, the buttons choose among them, the families set the lr shown."""
    model, layers, buttons, private = ui.inputs["model"], ui.inputs["layers"], ui.layer_buttons, ctx.private

    def on_model(name, selected):
        try:
            info = model_info(name)
        except FormError as err:
            return gr.CheckboxGroup(), f"⚠️ {err}"
        n = info.num_layers
        kept = [v for v in (selected or []) if str(v).isdigit() and int(v) < n] or [str(n - 1)]
        return gr.CheckboxGroup(choices=layer_toggle_choices(n), value=kept, info=info.layers_note), ""

    gr.on(model_events, on_model, [model, layers], [layers, ui.messages["model"]], **private)

    def depth(name) -> int:
        try:
            return model_info(name).num_layers
        except FormError:
            return 0

    buttons.all.click(lambda name: [str(i) for i in range(depth(name))], model, layers, **private)
    buttons.none.click(lambda: [], None, layers, **private)
    buttons.first.click(lambda k, name: first_layers(k, depth(name)), [buttons.k, model], layers, **private)
    buttons.last.click(lambda k, name: last_layers(k, depth(name)), [buttons.k, model], layers, **private)

    def on_families(fams, how):
        """The lr box shows the default of what will train: the families, or the method wrapping them."""
        fams = [f"{how}:{f}" for f in fams or []] if how in METHOD_CHOICES[1:] else fams
        return gr.Number(value=lr_default(fams), info=lr_hint(fams))

    families, method = ui.inputs["families"], ui.inputs["method"]
    gr.on([families.change, method.change], on_families, [families, method], ui.inputs["lr"], **private)


def wire_command(ctx, ui: Layout, triggers: list) -> None:
    """The command box: written when it is opened, and kept equal to the form while it is open."""

    def show_command(**values) -> str:
        """The `moduletune submit|sweep` line equal to the form, or why there is none yet."""
        try:
            return form_command(form_of(values))
        except Exception as err:  # a refusal says what to fix, as the preview does
            return f"# no command yet: {visitor_message(err, 'write the command')}"

    ui.command_box.expand(show_command, inputs_kwargs=ui.inputs, outputs=ui.command, preprocess=False, **ctx.private)
    gr.on(
        triggers,
        show_command,
        inputs_kwargs=ui.inputs,
        outputs=ui.command,
        trigger_mode="multiple",
        preprocess=False,
        **ctx.private,
    )
