"""The Experiment tab's paper-study offer: the preset's button, its confirmation (the full study and a quick size,
each with its time) and what confirming queues, as one study (app.experiment.preset, app.public.actions)."""

from types import SimpleNamespace

import gradio as gr

from moduletune.app.experiment.form import form_of
from moduletune.app.experiment.preset import PAPER_FAMILIES, paper_study_message, preset_searches
from moduletune.app.experiment.submit import error_outcome, submit_preset
from moduletune.app.public import visitors


def layout() -> SimpleNamespace:
    """The offer's widgets, laid out where the caller is building (the Experiment tab's right column)."""
    with gr.Group():
        gr.Markdown(
            "**Preset: the paper's study**, as one study you can watch, pause and cancel in the "
            "**Study** tab. The module families ticked above (random controls when asked) on all layers "
            "and on each layer separately, plus full fine-tuning, on the chosen tasks, seeds and "
            "subsampling; the learning rate is searched first (per setting or per family, as chosen "
            "above). The confirmation offers the full study and a quick size, each with its time.",
            elem_classes="help",
            padding=True,
        )
        with gr.Row():
            paper_families = gr.Button(
                "Tick the paper's seven (Q K V AO FI FO LN)", size="sm", elem_id="paper-families"
            )
            paper = gr.Button("Queue the paper's study…", elem_id="paper-study")
        baselines = gr.Checkbox(
            False,
            label="add LoRA (r from More settings, 8 by default) on Q+V and (IA)³ on K+V+FO as baselines, on all "
            "layers, each with its own lr search",
            elem_id="paper-baselines",
        )
        paper_msg = gr.Markdown("", elem_id="paper-msg")
        with gr.Row():
            paper_confirm = gr.Button(
                "Yes, queue the full study", variant="primary", visible=False, elem_id="paper-confirm"
            )
            paper_quick = gr.Button("Queue the quick size", visible=False, elem_id="paper-quick")
            paper_cancel = gr.Button("Cancel", visible=False, elem_id="paper-cancel")
        # A hidden box, not gr.State: a State input is not an API parameter, and the browser then
        # warns "Too many arguments provided for the endpoint" on every form edit.
        paper_open = gr.Checkbox(False, visible=False, elem_id="paper-open")

    return SimpleNamespace(
        families=paper_families,
        open=paper,
        message=paper_msg,
        confirm=paper_confirm,
        quick=paper_quick,
        cancel=paper_cancel,
        is_open=paper_open,
        baselines=baselines,
    )


def wire(ctx, offer, inputs: dict, triggers: list, submit_msg) -> None:
    """The offer's events: open it for the form, follow the form while open, queue the full or the quick study.

    inputs: the form's controls by parameter name; each handler takes the form by name (inputs_kwargs)."""
    registry, who, private = ctx.registry, ctx.who, ctx.private
    targets = [offer.message, offer.confirm, offer.quick, offer.cancel, offer.is_open]

    def paper_offer(**values):
        """The preset's confirmation for this form: (message, full, quick, cancel buttons, offer open)."""
        form = form_of(values)
        hidden = gr.Button(visible=False)
        try:
            text, n = paper_study_message(form, registry)
            quick = preset_searches(form, quick=True)
        except ValueError as err:
            return f"⚠️ {err}", hidden, hidden, hidden, False
        full = gr.Button(f"Yes, queue the full study ({n} searches)", visible=True)
        quick_button = gr.Button(f"Queue the quick size ({quick} searches)", visible=True)
        return text, full, quick_button, gr.Button(visible=True), True

    offer.open.click(paper_offer, inputs_kwargs=inputs, outputs=targets, preprocess=False, **private)
    offer.families.click(lambda: list(PAPER_FAMILIES), None, inputs["families"], **private)

    def follow_form(is_open, **values):
        """An open offer follows the form, so the count confirmed is the count queued."""
        return paper_offer(**values) if is_open else (gr.skip(),) * len(targets)

    gr.on(
        triggers,
        follow_form,
        inputs_kwargs={"is_open": offer.is_open, **inputs},
        outputs=targets,
        trigger_mode="multiple",  # as the preview: "always_last" looped (app.experiment.tab)
        show_progress="hidden",
        preprocess=False,
        **private,
    )

    def confirmed(quick: bool):
        """The handler of a confirmation: queue the study (quick: at its quick size) and close the offer."""

        def confirm(request: gr.Request, profile: gr.OAuthProfile | None, **values):
            try:
                out = submit_preset(registry, form_of(values), who(request, profile), quick=quick)
            except visitors.LoginRequired as err:
                out = error_outcome(err)
            return out.message, *closed()

        return confirm

    for button, quick in ((offer.confirm, False), (offer.quick, True)):
        button.click(
            confirmed(quick),
            inputs_kwargs=inputs,
            outputs=[submit_msg, *targets],
            concurrency_limit=1,
            preprocess=False,
            **private,
        )
    offer.cancel.click(closed, None, targets, **private)


def closed() -> tuple:
    """The offer closed (made when an event runs: a component made while building would join the layout)."""
    return "", gr.Button(visible=False), gr.Button(visible=False), gr.Button(visible=False), False
