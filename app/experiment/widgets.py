"""The Experiment form's building blocks: the inputs made from the RunConfig's Knobs, the message line beside a
control, and the form kept in the browser across a reload."""

import gradio as gr

from moduletune.app.experiment.form import layer_toggle_choices
from moduletune.app.experiment.model_info import model_info
from moduletune.app.public.checks import FormError
from moduletune.tuning.config import KNOBS, form_default


def field_message(fld: str):
    """The empty line beside one form control where a message about it appears (app.experiment.fields.FIELDS)."""

    return gr.Markdown("", elem_id=fld.replace("_", "-") + "-msg", elem_classes="field-msg")


def setting_input(name: str, elem_id: str, model_box=None, **shown):
    """The form input for one setting, made from its Knob: its label, help, the form's default and its widget
    (shown: what this form shows instead, e.g. a value that depends on other controls; model_box: the lab's model
    input, app.ui)."""
    k = KNOBS[name]
    default = shown.pop("value", form_default(name))
    label = k.title(name).replace("lr ", "LR ").replace("cuda ", "CUDA ")
    common = dict(label=label[0].upper() + label[1:], info=k.help, elem_id=elem_id) | shown
    if k.widget == "model" and model_box is not None:
        return model_box(elem_id, 2, f"{k.help}; press Enter to load its layers")
    if k.kind == "int":
        # No minimum or maximum here: the Knob's own check names the range beside the field, and an optional
        # setting's box holds 0 for what 0 means (a number box cannot be blank).
        if k.optional and "info" not in shown:
            common["info"] += f" (0 = {k.zero})"
        return gr.Number(0 if default is None else default, precision=0, **common)
    if k.kind == "number":
        return gr.Number(default, **common)
    if k.kind == "choice":
        widget = gr.Radio if k.widget == "radio" else gr.Dropdown
        return widget(list(k.choices), value=default, **common)
    if k.kind == "bool":
        return gr.Checkbox(default, **common)
    return gr.Textbox(
        "" if default is None else str(default), placeholder="default" if default is None else None, **common
    )


def keep_in_browser(demo, inputs: dict, saved, private: dict):
    """Keep the form (inputs: form parameter name -> control) in `saved` (a gr.BrowserState: localStorage) so a reload
    gives back what was typed; returns the load event that restores it, for the events that must follow it."""

    def keep(**values) -> dict:
        return values

    # change, not input: the layer buttons and a model's new depth change the toggles without typing. The values as
    # the browser holds them, unprocessed both ways: a number box rounds 2.5 to a valid 2 on the way in and out, and
    # a restored value must be checked like a typed one. trigger_mode="multiple", as for the preview (tab.py):
    # "always_last" looped on restored values.
    gr.on(
        [c.change for c in inputs.values()],
        keep,
        inputs_kwargs=inputs,
        outputs=saved,
        show_progress="hidden",
        preprocess=False,
        trigger_mode="multiple",
        **private,
    )

    # What each control shows before any restore: a kept value equal to it is not set again, because setting a
    # multiselect Dropdown to the value it already holds made Gradio 6 fire its change event over and over (the
    # preview, the command and the kept form re-sent several times a second, for as long as the page stayed open).
    shown = {name: c.value for name, c in inputs.items()}

    def restore(kept) -> dict:
        """The kept values back into their controls (a control the saved form lacks, or already shows that value,
        is left as it is)."""
        kept = kept if isinstance(kept, dict) else {}
        return {c: kept[n] if n in kept and kept[n] != shown[n] else gr.skip() for n, c in inputs.items()}

    return demo.load(restore, saved, list(inputs.values()), postprocess=False, **private)


def restored_model(name):
    """The restored model's layer toggles: its depth only, never a selection (the restore set the layers, and a
    person may have changed them since)."""

    try:
        info = model_info(name)
    except FormError:
        return gr.skip()
    return gr.CheckboxGroup(choices=layer_toggle_choices(info.num_layers), info=info.layers_note)
