"""The Experiment form's building blocks: handlers over the whole form, the message line beside a control,
and the Advanced inputs made from the RunConfig's Knobs."""

import gradio as gr

from moduletune.app.experiment.form import FORM_PARAMS, form_of, layer_toggle_choices
from moduletune.app.experiment.model_info import model_info
from moduletune.app.public.checks import FormError
from moduletune.tuning.config import KNOBS, RunConfig


def form_handler(body, before: tuple[str, ...] = (), identity: bool = False):
    """A Gradio handler over the whole form: one named parameter per form value (what the API and
    gradio_client see), and body(*before_values, form[, request, profile]) receiving one Form.

    With identity, Gradio fills in the request and the OAuth profile (by their annotations) after the form."""
    import inspect

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


def field_message(fld: str):
    """The empty line beside one form control where a message about it appears (app.form.FIELDS)."""

    return gr.Markdown("", elem_id=fld.replace("_", "-") + "-msg", elem_classes="field-msg")


def knob_input(name: str):
    """The form input for one Advanced setting, made from its Knob: label, help, bounds, choices, default."""

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


def keep_in_browser(demo, form_inputs: list, saved, private: dict):
    """Keep the form in `saved` (a gr.BrowserState: localStorage) so a reload gives back what was typed; returns
    the load event that restores it, for the events that must follow it."""

    def keep(*values):
        return dict(zip(FORM_PARAMS, values, strict=True))

    # change, not input: the layer buttons and a model's new depth change the toggles without typing. The values as
    # the browser holds them, unprocessed both ways: a number box rounds 2.5 to a valid 2 on the way in and out, and
    # a restored value must be checked like a typed one. trigger_mode="multiple", as for the preview
    # (app.tabs.experiment): "always_last" looped on restored values.
    gr.on(
        [c.change for c in form_inputs],
        keep,
        form_inputs,
        saved,
        show_progress="hidden",
        preprocess=False,
        trigger_mode="multiple",
        **private,
    )

    # What each control shows before any restore: a kept value equal to it is not set again, because setting a
    # multiselect Dropdown to the value it already holds made Gradio 6 fire its change event over and over (the
    # preview, the command and the kept form re-sent several times a second, for as long as the page stayed open).
    shown = {n: c.value for n, c in zip(FORM_PARAMS, form_inputs, strict=True)}

    def restore(kept):
        """The kept values back into their controls (a control the saved form lacks, or already shows that value,
        is left as it is)."""
        kept = kept if isinstance(kept, dict) else {}
        return [kept[n] if n in kept and kept[n] != shown[n] else gr.skip() for n in FORM_PARAMS]

    return demo.load(restore, saved, form_inputs, postprocess=False, **private)


def restored_model(name):
    """The restored model's layer toggles: its depth only, never a selection (the restore set the layers, and a
    person may have changed them since)."""

    try:
        info = model_info(name)
    except FormError:
        return gr.skip()
    return gr.CheckboxGroup(choices=layer_toggle_choices(info.num_layers), info=info.layers_note)
