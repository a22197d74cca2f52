"""The Playground tab: a finished run's prediction for a typed sentence (or pair) beside the base model's."""

import gradio as gr

from moduletune.app import model_views, views


def build(ctx):
    """Lay out the tab and wire its events inside the Blocks being built; returns the Tab."""
    registry, private = ctx.registry, ctx.private

    with gr.Tab("Playground", id="playground", elem_id="tab-playground") as tab_play:
        gr.Markdown(
            "Pick a finished run and type a sentence (or a pair): the tuned model's prediction "
            "next to the untuned base model's (the same encoder with a fresh, untrained head).",
            elem_classes="help",
        )
        play_run = gr.Dropdown([], value=None, label="Finished run", elem_id="play-run")
        with gr.Row():
            play_a = gr.Textbox(
                "", label="Sentence", lines=2, elem_id="play-text-a", placeholder="A man is playing a guitar."
            )
            play_b = gr.Textbox(
                "",
                label="Second sentence",
                lines=2,
                elem_id="play-text-b",
                placeholder="A person plays an instrument.",
                visible=False,
            )
        play_go = gr.Button("Predict", variant="primary", elem_id="play-go")
        play_msg = gr.Markdown("", elem_id="play-msg")
        with gr.Row():
            play_tuned = gr.Label(label="Tuned run", elem_id="play-tuned", num_top_classes=3)
            play_base = gr.Label(label="Untuned base model", elem_id="play-base", num_top_classes=3)

    def on_play_tab(current):
        choices = views.run_choices(registry, status="succeeded")
        ids = [c[1] for c in choices]
        return gr.Dropdown(choices=choices, value=current if current in ids else (ids[0] if ids else None))

    tab_play.select(on_play_tab, play_run, play_run, **private)

    def on_play_run(run_id):
        if run_id in (None, ""):
            return (
                gr.Textbox(label="Sentence"),
                gr.Textbox(visible=False),
                "No finished run yet: queue one in the Experiment tab.",
            )
        spec = model_views.task_inputs(registry, run_id)
        cols = spec["columns"]
        return (
            gr.Textbox(label=cols[0]),
            gr.Textbox(label=cols[1] if spec["pair"] else "", visible=spec["pair"]),
            f"Task **{spec['task']}**" + (" compares two texts." if spec["pair"] else "."),
        )

    play_run.change(on_play_run, play_run, [play_a, play_b, play_msg], **private)

    def on_predict(run_id, text_a, text_b):
        try:
            out = model_views.predict(registry, run_id, text_a, text_b)
        except (ValueError, OSError) as err:
            return None, None, f"⚠️ {err}"

        def fmt(v):  # class probabilities for gr.Label, or STS-B's similarity score as text
            return v if "score" not in v else f"similarity {v['score']:.3f}"

        return (
            fmt(out["tuned"]),
            fmt(out["base"]),
            (f"Tuned: **{out['label']}** · untuned base: **{out['base_label']}** ({out['task']})"),
        )

    play_go.click(on_predict, [play_run, play_a, play_b], [play_tuned, play_base, play_msg], **private)
    return tab_play
